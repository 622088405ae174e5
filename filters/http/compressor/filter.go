package compressor

import (
	"bytes"
	"strconv"

	"github.com/outrider-proxy/outrider/filters/http/internal/coding"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
)

// filter is one stream's compressor state.
type filter struct {
	cfg *config
	cb  httpfilter.Callbacks
	// acceptEncoding is the request's Accept-Encoding, copied; hasAccept
	// tells an absent header from an empty one.
	acceptEncoding []byte
	hasAccept      bool
	route          *perRoute
	// body compresses each direction; its compressors go back to their
	// pool only when the stream is over.
	body coding.Body[Compressor]
}

// Reset lets the connection manager reuse the filter.
func (f *filter) Reset() {
	f.body.Reset()
	f.acceptEncoding, f.hasAccept, f.route = f.acceptEncoding[:0], false, nil
}

// OnDestroy gives the compressors back at the end of the stream.
func (f *filter) OnDestroy() { f.body.Release() }

// respEnabled is compressionEnabled: the route's override, else the flag.
func (f *filter) respEnabled() bool {
	if f.route != nil && f.route.respEnabled != nil {
		return *f.route.respEnabled
	}
	return f.cfg.resp.on()
}

func (f *filter) removeAcceptEncoding() bool {
	if f.route != nil && f.route.removeAcceptEncoding != nil {
		return *f.route.removeAcceptEncoding
	}
	return f.cfg.removeAcceptEncoding
}

// DecodeHeaders is CompressorFilter::decodeHeaders: it records
// Accept-Encoding, registers the filter for the encoding decision and
// starts request compression when request_direction_config allows it.
func (f *filter) DecodeHeaders(h *headers.Map, end bool) httpfilter.Status {
	register(f.cb, f.cfg)
	f.acceptEncoding = f.acceptEncoding[:0]
	h.Values("accept-encoding", func(v []byte) bool { // several lines are one list
		if f.hasAccept {
			f.acceptEncoding = append(f.acceptEncoding, ',')
		}
		f.acceptEncoding, f.hasAccept = append(f.acceptEncoding, v...), true
		return true
	})
	if r := f.cb.Route(); r != nil {
		if a := r.PerFilterConfig(Name); a != nil {
			f.route = f.cfg.perRoute(a)
		}
	}
	if f.respEnabled() && f.removeAcceptEncoding() {
		h.Del("accept-encoding")
	}
	d := f.cfg.req
	if !end && f.cfg.reqSet && d.on() && !isUpgrade(h) && f.minLength(d, h) &&
		typeAllowed(d, h) && !h.Has("content-encoding") && f.transferEncodingAllowed(h) {
		h.Del("content-length")
		h.Set("content-encoding", f.cfg.encoding)
		d.compressed.Inc()
		f.body.Start(false, f.cfg.lib.NewCompressor())
	} else {
		d.notCompressed.Inc()
	}
	return httpfilter.Continue
}

func (f *filter) DecodeData(p []byte, end bool) httpfilter.Status {
	f.body.Code(false, p, end, f.compress)
	return httpfilter.Continue
}

// DecodeTrailers ends the compressed request body before the trailers.
func (f *filter) DecodeTrailers(*headers.Map) httpfilter.Status {
	f.body.Code(false, nil, true, f.compress)
	return httpfilter.Continue
}

// compress is compressAndUpdateStats. A compressor error cannot leave the
// body half valid: the stream is reset.
func (f *filter) compress(c Compressor, encode bool, p []byte, end bool) []byte {
	d := f.cfg.req
	if encode {
		d = f.cfg.resp
	}
	d.totalUncompressed.Add(uint64(len(p)))
	out, err := c.Compress(p, end)
	if err != nil {
		f.cb.ResetStream(0)
		return nil
	}
	d.totalCompressed.Add(uint64(len(out)))
	return out
}

// Rewritten hands the connection manager the compressed piece.
func (f *filter) Rewritten(encode bool) ([]byte, bool) { return f.body.Rewritten(encode) }

// EncodeHeaders is CompressorFilter::encodeHeaders.
func (f *filter) EncodeHeaders(h *headers.Map, end bool) httpfilter.Status {
	register(f.cb, f.cfg)
	d := f.cfg.resp
	bigEnough := f.respEnabled() && f.minLength(d, h)
	compressible := bigEnough && !isUpgrade(h) && typeAllowed(d, h) &&
		!noTransform(h) && f.etagAllowed(h) && !h.Has("content-encoding") && !f.cfg.uncompressible[h.StatusCode()]
	if !end && f.acceptEncodingAllowed(bigEnough, h) && compressible && f.transferEncodingAllowed(h) {
		f.sanitizeEtag(h)
		h.Del("content-length")
		h.Set("content-encoding", f.cfg.encoding)
		d.compressed.Inc()
		f.body.Start(true, f.cfg.lib.NewCompressor())
	} else {
		d.notCompressed.Inc()
	}
	// Vary goes on whenever the response could be compressed, so a cache
	// keeps the variants apart.
	if compressible {
		insertVary(h)
	}
	return httpfilter.Continue
}

func (f *filter) EncodeData(p []byte, end bool) httpfilter.Status {
	f.body.Code(true, p, end, f.compress)
	return httpfilter.Continue
}

// EncodeTrailers ends the compressed response body before the trailers.
func (f *filter) EncodeTrailers(*headers.Map) httpfilter.Status {
	f.body.Code(true, nil, true, f.compress)
	return httpfilter.Continue
}

// minLength is isMinimumContentLength: a content-length below the minimum
// (or not a number) rules compression out; none allows it.
func (f *filter) minLength(d *direction, h *headers.Map) bool {
	v, ok := h.Get("content-length")
	if !ok {
		return true
	}
	n, err := strconv.ParseUint(string(v), 10, 64)
	if err != nil || n < d.minLen {
		d.tooSmall.Inc()
		return false
	}
	return true
}

// etagAllowed is isEtagAllowed: disable_on_etag_header rules out responses
// with an ETag, unless weaken_etag_on_compress takes precedence.
func (f *filter) etagAllowed(h *headers.Map) bool {
	if f.cfg.disableOnEtag && !f.cfg.weakenEtag && h.Has("etag") {
		f.cfg.notCompressedEtag.Inc()
		return false
	}
	return true
}

// sanitizeEtag removes a strong ETag (weak ones stay), or makes it weak with
// weaken_etag_on_compress.
func (f *filter) sanitizeEtag(h *headers.Map) {
	v, ok := h.Get("etag")
	if !ok || len(v) <= 2 || (v[0] == 'w' || v[0] == 'W') && v[1] == '/' {
		return
	}
	if f.cfg.weakenEtag {
		h.Set("etag", "W/"+string(v))
		return
	}
	h.Del("etag")
}

// transferEncodingAllowed is isTransferEncodingAllowed: a body already
// transfer-coded with a compression is left alone.
func (f *filter) transferEncodingAllowed(h *headers.Map) bool {
	v, ok := h.Get("transfer-encoding")
	if !ok {
		return true
	}
	for _, tok := range bytes.Split(v, []byte(",")) {
		tok = bytes.TrimSpace(tok)
		for _, c := range []string{"gzip", "br", "deflate", "compress", "zstd", f.cfg.encoding} {
			if bytes.EqualFold(tok, []byte(c)) {
				return false
			}
		}
	}
	return true
}

// contentType is the content-type without parameters, trimmed; ok is false
// when there is none.
func contentType(h *headers.Map) (ct string, ok bool) {
	v, ok := h.Get("content-type")
	if !ok {
		return "", false
	}
	if i := bytes.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	return string(bytes.TrimSpace(v)), true
}

// typeAllowed is isContentTypeAllowed: a response without a content type is
// allowed.
func typeAllowed(d *direction, h *headers.Map) bool {
	ct, ok := contentType(h)
	return !ok || d.typeAllowed(ct)
}

// noTransform is hasCacheControlNoTransform.
func noTransform(h *headers.Map) bool {
	v, ok := h.Get("cache-control")
	return ok && hasToken(v, "no-transform")
}

// isUpgrade is Http::Utility::isUpgrade: an Upgrade header with "upgrade"
// among the Connection tokens.
func isUpgrade(h *headers.Map) bool {
	if !h.Has("upgrade") {
		return false
	}
	v, _ := h.Get("connection")
	return hasToken(v, "upgrade")
}

// hasToken reports whether the comma-separated list v has tok, ignoring
// case and spaces.
func hasToken(v []byte, tok string) bool {
	for _, t := range bytes.Split(v, []byte(",")) {
		if bytes.EqualFold(bytes.TrimSpace(t), []byte(tok)) {
			return true
		}
	}
	return false
}

// insertVary adds "Accept-Encoding" to Vary unless it is there already.
func insertVary(h *headers.Map) {
	v, ok := h.Get("vary")
	if !ok {
		h.Set("vary", "Accept-Encoding")
		return
	}
	for _, t := range bytes.Split(v, []byte(",")) { // case-sensitive, as Envoy's findToken
		if string(bytes.TrimSpace(t)) == "Accept-Encoding" {
			return
		}
	}
	h.Set("vary", string(v)+", Accept-Encoding")
}
