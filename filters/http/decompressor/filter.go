package decompressor

import (
	"bytes"
	"strings"

	"github.com/outrider-proxy/outrider/filters/http/internal/coding"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
)

// filter is one stream's decompressor state.
type filter struct {
	cfg *config
	cb  httpfilter.Callbacks
	// body decompresses each direction (no decompressor: that body passes
	// untouched).
	body    coding.Body[Decompressor]
	scratch []byte
}

// Reset lets the connection manager reuse the filter.
func (f *filter) Reset() { f.body.Reset() }

// OnDestroy gives the decompressors back at the end of the stream (a body
// cut short leaves its decoder waiting for input).
func (f *filter) OnDestroy() { f.body.Release() }

// DecodeHeaders is DecompressorFilter::decodeHeaders: with response
// decompression enabled it advertises the library's encoding upstream, then
// sets up request decompression.
func (f *filter) DecodeHeaders(h *headers.Map, end bool) httpfilter.Status {
	if f.cfg.resp.on() && f.cfg.advertise {
		v, _ := joined(h, "accept-encoding", &f.scratch)
		h.Set("accept-encoding", addEncoding(v, f.cfg.encoding))
	}
	if end { // headers-only requests are not counted
		return httpfilter.Continue
	}
	f.body.Start(false, f.maybeInit(f.cfg.req, h))
	return httpfilter.Continue
}

func (f *filter) DecodeData(p []byte, end bool) httpfilter.Status {
	f.body.Code(false, p, end, f.decompress)
	return httpfilter.Continue
}

// DecodeTrailers ends the request body before the trailers: what the
// decoder still held goes on first.
func (f *filter) DecodeTrailers(*headers.Map) httpfilter.Status {
	f.body.Code(false, nil, true, f.decompress)
	return httpfilter.Continue
}

// EncodeHeaders is DecompressorFilter::encodeHeaders.
func (f *filter) EncodeHeaders(h *headers.Map, end bool) httpfilter.Status {
	if end {
		return httpfilter.Continue
	}
	f.body.Start(true, f.maybeInit(f.cfg.resp, h))
	return httpfilter.Continue
}

func (f *filter) EncodeData(p []byte, end bool) httpfilter.Status {
	f.body.Code(true, p, end, f.decompress)
	return httpfilter.Continue
}

// EncodeTrailers ends the response body before the trailers.
func (f *filter) EncodeTrailers(*headers.Map) httpfilter.Status {
	f.body.Code(true, nil, true, f.decompress)
	return httpfilter.Continue
}

// Rewritten hands the connection manager the decompressed piece.
func (f *filter) Rewritten(encode bool) ([]byte, bool) { return f.body.Rewritten(encode) }

// decompress is DecompressorFilter::decompress with its byte stats.
func (f *filter) decompress(d Decompressor, encode bool, p []byte, end bool) []byte {
	dir := f.cfg.req
	if encode {
		dir = f.cfg.resp
	}
	out := d.Decompress(p, end)
	dir.totalCompressed.Add(uint64(len(p)))
	dir.totalUncompressed.Add(uint64(len(out)))
	return out
}

// maybeInit is maybeInitDecompress: enabled, no Cache-Control no-transform
// (unless ignored) and the library's coding first in Content-Encoding. The
// coding is taken off Content-Encoding and Content-Length goes.
func (f *filter) maybeInit(d *direction, h *headers.Map) Decompressor {
	if !d.on() || (!d.ignoreNoTransform && noTransform(h)) || !f.encodingMatches(h) {
		d.notDecompressed.Inc()
		return nil
	}
	d.decompressed.Inc()
	h.Del("content-length")
	all, _ := joined(h, "content-encoding", &f.scratch)
	all = strings.TrimSpace(all)
	if i := strings.IndexByte(all, ','); i >= 0 {
		h.Set("content-encoding", strings.TrimSpace(all[i+1:]))
	} else {
		h.Del("content-encoding")
	}
	return f.cfg.lib.NewDecompressor()
}

// encodingMatches is contentEncodingMatches: the first coding listed,
// trimmed, equals the library's, ignoring case.
func (f *filter) encodingMatches(h *headers.Map) bool {
	v, ok := joined(h, "content-encoding", &f.scratch)
	if !ok {
		return false
	}
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	return strings.EqualFold(strings.TrimSpace(v), f.cfg.encoding)
}

// joined is the header's values as one comma-separated list, as Envoy's
// inline headers hold several lines; ok is false when there is none.
func joined(h *headers.Map, name string, scratch *[]byte) (v string, ok bool) {
	b := (*scratch)[:0]
	h.Values(name, func(p []byte) bool {
		if ok {
			b = append(b, ',')
		}
		b, ok = append(b, p...), true
		return true
	})
	*scratch = b
	return string(b), ok
}

// noTransform is hasCacheControlNoTransform.
func noTransform(h *headers.Map) bool {
	found := false
	h.Values("cache-control", func(v []byte) bool {
		for _, t := range bytes.Split(v, []byte(",")) {
			if bytes.EqualFold(bytes.TrimSpace(t), []byte("no-transform")) {
				found = true
				return false
			}
		}
		return true
	})
	return found
}

// addEncoding is HeaderUtility::addEncodingToAcceptEncoding: the encoding
// goes last, without a q-value, and any earlier mention of it is dropped.
func addEncoding(accept, encoding string) string {
	var b strings.Builder
	for _, tok := range strings.Split(accept, ",") {
		tok = strings.TrimSpace(tok)
		if tok == "" {
			continue
		}
		name := tok
		if i := strings.IndexByte(name, ';'); i >= 0 {
			name = name[:i]
		}
		if strings.TrimSpace(name) == encoding {
			continue
		}
		b.WriteString(tok)
		b.WriteByte(',')
	}
	b.WriteString(encoding)
	return b.String()
}
