package h2

import (
	"bytes"
	"errors"

	"golang.org/x/net/http2/hpack"
)

// hpackDecoder decodes HPACK header blocks (RFC 7541) without allocating
// per field: literals are handed to emit as slices of the block, of the
// dynamic table or of a reused Huffman buffer, valid only during the
// call. The dynamic table is one byte log with entry offsets, compacted in
// place, so an insertion allocates nothing once the log has grown. The
// read loop owns it. x/net's Decoder makes a string of every literal;
// Huffman decoding is still x/net's.
type hpackDecoder struct {
	emit       func(name, value []byte)
	emitOff    bool // fields are decoded for the table only
	maxStr     int  // the longest string accepted (encoded length); 0: no limit
	allowedMax int  // the table size the peer may ask for (our SETTINGS)
	maxSize    int  // the table size in force
	size       int  // RFC 7541 section 4.1 size of the entries

	log  []byte   // entry bytes, oldest first, from ents[head].off
	ents []dynEnt // oldest first from head
	head int

	pend       []byte // an unfinished field carried to the next fragment
	firstField bool   // nothing but size updates seen yet in this block
	huf        bytes.Buffer
}

// dynEnt is one dynamic table entry: name then value at off in log.
type dynEnt struct {
	off, nlen, vlen int32
}

var (
	errHpackIndex    = errors.New("hpack: invalid index")
	errHpackTrunc    = errors.New("hpack: truncated header block")
	errHpackVarint   = errors.New("hpack: integer overflow")
	errHpackStrLen   = errors.New("hpack: string too long")
	errHpackSize     = errors.New("hpack: dynamic table size update too large")
	errHpackSizeLate = errors.New("hpack: dynamic table size update after a header field")
	errNeedMore      = errors.New("need more") // internal: the field continues in the next fragment
)

func newHpackDecoder(tableSize uint32, emit func(name, value []byte)) *hpackDecoder {
	return &hpackDecoder{emit: emit, allowedMax: int(tableSize), maxSize: int(tableSize), firstField: true}
}

// write decodes fragment p of a header block; a field cut at the end of p
// waits for the next fragment.
func (d *hpackDecoder) write(p []byte) error {
	buf := p
	if len(d.pend) > 0 {
		d.pend = append(d.pend, p...)
		buf = d.pend
	}
	n, err := d.decode(buf)
	if err == errNeedMore {
		err = nil
	}
	rest := buf[n:]
	if len(d.pend) > 0 {
		d.pend = d.pend[:copy(d.pend, rest)]
	} else {
		d.pend = append(d.pend[:0], rest...)
	}
	return err
}

// close ends the block: a field left unfinished is an error.
func (d *hpackDecoder) close() error {
	d.firstField = true
	if len(d.pend) > 0 {
		d.pend = d.pend[:0]
		return errHpackTrunc
	}
	return nil
}

// decode consumes the whole fields of buf and reports how many bytes they
// took.
func (d *hpackDecoder) decode(buf []byte) (int, error) {
	done := 0
	for done < len(buf) {
		n, err := d.field(buf[done:])
		if err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

// field decodes one representation at the start of b.
func (d *hpackDecoder) field(b []byte) (int, error) {
	c := b[0]
	switch {
	case c&0x80 != 0: // indexed field
		i, n, err := readVarint(b, 7)
		if err != nil {
			return 0, err
		}
		name, value, ok := d.at(i)
		if !ok {
			return 0, errHpackIndex
		}
		d.firstField = false
		if !d.emitOff {
			d.emit(name, value)
		}
		return n, nil
	case c&0xe0 == 0x20: // dynamic table size update
		if !d.firstField {
			return 0, errHpackSizeLate
		}
		v, n, err := readVarint(b, 5)
		if err != nil {
			return 0, err
		}
		if v > uint64(d.allowedMax) {
			return 0, errHpackSize
		}
		d.maxSize = int(v)
		d.evictTo(d.maxSize)
		return n, nil
	}
	index := c&0xc0 == 0x40 // literal with incremental indexing
	prefix := uint8(4)
	if index {
		prefix = 6
	}
	i, n, err := readVarint(b, prefix)
	if err != nil {
		return 0, err
	}
	d.huf.Reset()
	var name []byte
	nameHuf := -1 // the Huffman-decoded name's length in huf; -1: name is a slice
	if i > 0 {
		var ok bool
		if name, _, ok = d.at(i); !ok {
			return 0, errHpackIndex
		}
	} else {
		s, huf, m, err := d.str(b[n:])
		if err != nil {
			return 0, err
		}
		n += m
		if huf {
			nameHuf = d.huf.Len()
		} else {
			name = s
		}
	}
	value, huf, m, err := d.str(b[n:])
	if err != nil {
		return 0, err
	}
	n += m
	if nameHuf >= 0 || huf {
		all := d.huf.Bytes()
		if nameHuf >= 0 {
			name = all[:nameHuf]
		}
		if huf {
			value = all[max(nameHuf, 0):]
		}
	}
	d.firstField = false
	if index {
		name, value = d.add(name, value)
	}
	if !d.emitOff {
		d.emit(name, value)
	}
	return n, nil
}

// str reads a string literal at the start of b. A Huffman-coded one is
// appended to d.huf (huf true); a plain one is a slice of b.
func (d *hpackDecoder) str(b []byte) (s []byte, huf bool, n int, err error) {
	if len(b) == 0 {
		return nil, false, 0, errNeedMore
	}
	huf = b[0]&0x80 != 0
	l, n, err := readVarint(b, 7)
	if err != nil {
		return nil, false, 0, err
	}
	if d.maxStr > 0 && l > uint64(d.maxStr) {
		return nil, false, 0, errHpackStrLen
	}
	if uint64(len(b)-n) < l {
		return nil, false, 0, errNeedMore
	}
	s = b[n : n+int(l)]
	n += int(l)
	if huf {
		if _, err := hpack.HuffmanDecode(&d.huf, s); err != nil {
			return nil, false, 0, err
		}
		s = nil
	}
	return s, huf, n, nil
}

// readVarint reads an integer with an n-bit prefix (RFC 7541 section 5.1).
func readVarint(b []byte, n uint8) (v uint64, used int, err error) {
	if len(b) == 0 {
		return 0, 0, errNeedMore
	}
	mask := uint64(1)<<n - 1
	v = uint64(b[0]) & mask
	if v < mask {
		return v, 1, nil
	}
	var shift uint
	for i := 1; i < len(b); i++ {
		c := b[i]
		v += uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			return v, i + 1, nil
		}
		shift += 7
		if shift >= 63 {
			return 0, 0, errHpackVarint
		}
	}
	return 0, 0, errNeedMore
}

// at returns entry i of the static table followed by the dynamic one.
func (d *hpackDecoder) at(i uint64) (name, value []byte, ok bool) {
	if i == 0 {
		return nil, nil, false
	}
	if i <= uint64(len(staticTable)) {
		e := &staticTable[i-1]
		return e.name, e.value, true
	}
	k := i - uint64(len(staticTable)) // 1 is the newest
	if k > uint64(len(d.ents)-d.head) {
		return nil, nil, false
	}
	e := d.ents[len(d.ents)-int(k)]
	return d.log[e.off : e.off+e.nlen], d.log[e.off+e.nlen : e.off+e.nlen+e.vlen], true
}

// add inserts a field as the newest entry (RFC 7541 section 4.4) and
// returns its bytes in the table; a field larger than the table empties it
// and is returned as given.
func (d *hpackDecoder) add(name, value []byte) ([]byte, []byte) {
	need := len(name) + len(value) + 32
	if need > d.maxSize {
		d.evictTo(0)
		return name, value
	}
	// name may be an entry about to be evicted, or a slice of log that
	// compaction moves: put both in huf's tail first.
	start := d.huf.Len()
	d.huf.Write(name)
	d.huf.Write(value)
	d.evictTo(d.maxSize - need)
	if len(d.log)+need-32 > 2*d.maxSize && d.head < len(d.ents) {
		// Compact: the live entries move to the front of the log.
		shift := d.ents[d.head].off
		d.log = d.log[:copy(d.log, d.log[shift:])]
		n := copy(d.ents, d.ents[d.head:])
		d.ents, d.head = d.ents[:n], 0
		for j := range d.ents {
			d.ents[j].off -= shift
		}
	}
	if d.head > 64 && d.head*2 > len(d.ents) {
		n := copy(d.ents, d.ents[d.head:])
		d.ents, d.head = d.ents[:n], 0
	}
	kv := d.huf.Bytes()[start:]
	off := int32(len(d.log))
	d.log = append(d.log, kv...)
	d.ents = append(d.ents, dynEnt{off: off, nlen: int32(len(name)), vlen: int32(len(value))})
	d.size += need
	e := d.log[off:]
	return e[:len(name):len(name)], e[len(name) : len(name)+len(value)]
}

// evictTo drops the oldest entries until the table's size is at most max.
func (d *hpackDecoder) evictTo(max int) {
	for d.size > max && d.head < len(d.ents) {
		e := d.ents[d.head]
		d.size -= int(e.nlen) + int(e.vlen) + 32
		d.head++
	}
	if d.head == len(d.ents) {
		d.log, d.ents, d.head = d.log[:0], d.ents[:0], 0
	}
}

type staticEntry struct{ name, value []byte }

func se(name, value string) staticEntry { return staticEntry{[]byte(name), []byte(value)} }

// staticTable is RFC 7541 Appendix A.
var staticTable = [...]staticEntry{
	se(":authority", ""), se(":method", "GET"), se(":method", "POST"), se(":path", "/"),
	se(":path", "/index.html"), se(":scheme", "http"), se(":scheme", "https"), se(":status", "200"),
	se(":status", "204"), se(":status", "206"), se(":status", "304"), se(":status", "400"),
	se(":status", "404"), se(":status", "500"), se("accept-charset", ""), se("accept-encoding", "gzip, deflate"),
	se("accept-language", ""), se("accept-ranges", ""), se("accept", ""), se("access-control-allow-origin", ""),
	se("age", ""), se("allow", ""), se("authorization", ""), se("cache-control", ""),
	se("content-disposition", ""), se("content-encoding", ""), se("content-language", ""), se("content-length", ""),
	se("content-location", ""), se("content-range", ""), se("content-type", ""), se("cookie", ""),
	se("date", ""), se("etag", ""), se("expect", ""), se("expires", ""),
	se("from", ""), se("host", ""), se("if-match", ""), se("if-modified-since", ""),
	se("if-none-match", ""), se("if-range", ""), se("if-unmodified-since", ""), se("last-modified", ""),
	se("link", ""), se("location", ""), se("max-forwards", ""), se("proxy-authenticate", ""),
	se("proxy-authorization", ""), se("range", ""), se("referer", ""), se("refresh", ""),
	se("retry-after", ""), se("server", ""), se("set-cookie", ""), se("strict-transport-security", ""),
	se("transfer-encoding", ""), se("user-agent", ""), se("vary", ""), se("via", ""),
	se("www-authenticate", ""),
}
