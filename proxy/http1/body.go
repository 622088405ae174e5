package http1

import (
	"bytes"
	"io"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// ReadData returns the next piece of the current body, de-chunked. The slice
// aliases the decoder's buffer and is valid until the next call on the
// decoder. After the last piece it returns (nil, io.EOF), never data and
// io.EOF together. A body cut short by the peer gives io.ErrUnexpectedEOF;
// a framing violation gives an *Error (the connection must then be closed).
func (d *Decoder) ReadData() ([]byte, error) {
	if d.fail != nil {
		return nil, d.fail
	}
	if d.released {
		return nil, errReleased
	}
	var p []byte
	var err error
	switch d.mode {
	case bodyDone:
		return nil, io.EOF
	case bodyLength:
		p, err = d.readCounted()
		if err == nil && d.remaining == 0 {
			d.mode = bodyDone
		}
	case bodyRaw:
		if d.rd == d.wr {
			if err = d.fillBody(); err == io.EOF {
				d.mode = bodyDone
				return nil, io.EOF
			}
		}
		if err == nil {
			p = d.buf[d.rd:d.wr]
			d.rd = d.wr
		}
	case bodyChunked:
		p, err = d.readChunked()
	}
	if err != nil && err != io.EOF {
		if d.isResp {
			err = asResponse(err)
		}
		d.fail = err
	}
	return p, err
}

// readCounted returns up to d.remaining buffered bytes, reading if none are.
func (d *Decoder) readCounted() ([]byte, error) {
	if d.rd == d.wr {
		if err := d.fillBody(); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	n := int64(d.wr - d.rd)
	if n > d.remaining {
		n = d.remaining
	}
	p := d.buf[d.rd : d.rd+int(n)]
	d.rd += int(n)
	d.remaining -= n
	return p, nil
}

// fillBody reads more body bytes. Unread bytes are kept; consumed ones (all
// handed out already) are overwritten. A small body is read into what the
// buffer has room for; a large one (more than bodyBuf left, or of unknown
// length) into a buffer of bigBodyBuf, so that a megabyte costs tens of
// reads, writes and handoffs, not hundreds.
func (d *Decoder) fillBody() error {
	if d.rd == d.wr {
		d.rd, d.wr = d.keep, d.keep
	}
	if d.mode == bodyLength && d.remaining <= bodyBuf {
		d.makeRoom(minBodyRead, bodyBuf)
	} else {
		d.makeRoom(bigBodyRead, bigBodyBuf)
	}
	return d.readMore()
}

func (d *Decoder) readChunked() ([]byte, error) {
	for {
		switch d.chunk {
		case chunkSize:
			line, err := d.readLine(maxChunkLine)
			if err != nil {
				return nil, err
			}
			n, err := parseChunkSize(line)
			if err != nil {
				return nil, err
			}
			if n == 0 {
				d.chunk = chunkTrailers
				continue
			}
			d.remaining = n
			d.chunk = chunkData
		case chunkData:
			p, err := d.readCounted()
			if err != nil {
				return nil, err
			}
			if d.remaining == 0 {
				d.chunk = chunkDataEnd
			}
			return p, nil
		case chunkDataEnd:
			for d.wr-d.rd < 2 {
				d.makeRoom(2, bodyBuf)
				if err := d.readMore(); err != nil {
					if err == io.EOF {
						err = io.ErrUnexpectedEOF
					}
					return nil, err
				}
			}
			if d.buf[d.rd] != '\r' || d.buf[d.rd+1] != '\n' {
				return nil, errChunkCRLF
			}
			d.rd += 2
			d.chunk = chunkSize
		case chunkTrailers:
			end, err := d.readBlock(d.lim.MaxHeaderBytes, errTrailersLarge)
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return nil, err
			}
			d.trailers.Reset()
			if _, err := d.parseFields(d.buf[d.rd:end-2], &d.trailers, nil, false, 0); err != nil {
				return nil, err
			}
			d.rd = end
			d.mode = bodyDone
			return nil, io.EOF
		}
	}
}

// readLine buffers one CRLF-terminated line at rd and consumes it, returning
// it without the CRLF. It is only used for chunk-size lines.
func (d *Decoder) readLine(limit int) ([]byte, error) {
	seen := d.rd
	for {
		if i := bytes.IndexByte(d.buf[seen:d.wr], '\n'); i >= 0 {
			end := seen + i
			if end == d.rd || d.buf[end-1] != '\r' {
				return nil, errChunkSize
			}
			line := d.buf[d.rd : end-1]
			d.rd = end + 1
			return line, nil
		}
		if d.wr-d.rd > limit {
			return nil, errChunkExt
		}
		off := d.wr - d.rd
		d.makeRoom(1, bodyBuf)
		seen = d.rd + off
		if err := d.readMore(); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// parseChunkSize parses "1*HEXDIG [ ';' chunk-ext ]". Extensions are allowed
// and ignored, but may not hold control characters (other than HTAB).
func parseChunkSize(line []byte) (int64, error) {
	var n int64
	i := 0
	for ; i < len(line); i++ {
		v := hexVal[line[i]]
		if v < 0 {
			break
		}
		if n > (1<<63-1)>>4 {
			return 0, errChunkSize
		}
		n = n<<4 | int64(v)
	}
	if i == 0 {
		return 0, errChunkSize
	}
	rest := line[i:]
	if len(rest) == 0 {
		return n, nil
	}
	if rest[0] != ';' {
		return 0, errChunkSize
	}
	if !validValue(rest) {
		return 0, errChunkExt
	}
	return n, nil
}

// Trailers appends the trailer fields of the chunked body just finished
// (after ReadData returned io.EOF) to h. Their bytes stay valid until the
// next ReadRequestHeaders/ReadResponseHeaders or Release.
func (d *Decoder) Trailers(h *headers.Map) {
	for _, f := range d.trailers.Fields() {
		h.AppendRef(f.Name, f.Value)
	}
}
