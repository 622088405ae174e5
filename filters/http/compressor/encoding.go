package compressor

import (
	"bytes"
	"slices"
	"strconv"
	"strings"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
)

// Filter-state names: every compressor filter of the stream's chain, and
// the encoding the first of them chose for the response (Envoy's
// "compressors" and "encoding_decision").
const (
	registryKey = "compressors"
	decisionKey = "encoding_decision"
)

// chain is the compressor filters of a stream, in filter order.
type chain struct{ cfgs []*config }

func (*chain) String() (string, bool) { return "", false }

// headerStat is which Accept-Encoding stat a decision counts.
type headerStat uint8

const (
	statNotValid headerStat = iota
	statIdentity
	statWildcard
	statValid
)

// decision is the chosen encoding, shared by the chain's filters.
type decision struct {
	encoding string
	stat     headerStat
}

func (*decision) String() (string, bool) { return "", false }

// register adds cfg to the stream's chain once (Envoy registers each filter
// as it is set up).
func register(cb httpfilter.Callbacks, cfg *config) {
	fs := &cb.Info().FilterState
	ch, _ := fs.Get(registryKey).(*chain)
	if ch == nil {
		ch = &chain{}
		fs.Set(registryKey, ch)
	}
	if !slices.Contains(ch.cfgs, cfg) {
		ch.cfgs = append(ch.cfgs, cfg)
	}
}

// acceptEncodingAllowed is isAcceptEncodingAllowed: with compression
// possible, it decides (once per stream) which encoding the client gets and
// counts the header stat.
func (f *filter) acceptEncodingAllowed(maybe bool, h *headers.Map) bool {
	if !maybe {
		return false
	}
	if !f.hasAccept {
		f.cfg.noAcceptHeader.Inc()
		return false
	}
	fs := &f.cb.Info().FilterState
	d, _ := fs.Get(decisionKey).(*decision)
	if d == nil {
		d = f.chooseEncoding(h)
		fs.Set(decisionKey, d)
	}
	return f.shouldCompress(d)
}

// shouldCompress reports whether d picked this filter's encoding and counts
// the header stat.
func (f *filter) shouldCompress(d *decision) bool {
	use := strings.EqualFold(f.cfg.encoding, d.encoding)
	switch d.stat {
	case statValid:
		if use {
			f.cfg.headerUsed.Inc()
		} else {
			f.cfg.headerOvershadowed.Inc()
		}
	case statIdentity:
		f.cfg.headerIdentity.Inc()
	case statWildcard:
		f.cfg.headerWildcard.Inc()
	default:
		f.cfg.headerNotValid.Inc()
	}
	return use
}

// allowed is one compressor's place in the decision.
type allowed struct {
	order       int
	chooseFirst bool
}

// chooseEncoding is CompressorFilter::chooseEncoding: the encoding with the
// highest q-value among the chain's compressors for this content type,
// "identity" and "*"; ties go to a choose_first compressor.
func (f *filter) chooseEncoding(h *headers.Map) *decision {
	ct, _ := contentType(h)
	compressors := map[string]allowed{}
	n := 0
	ch, _ := f.cb.Info().FilterState.Get(registryKey).(*chain)
	cfgs := []*config{f.cfg}
	if ch != nil {
		cfgs = ch.cfgs
	}
	for _, c := range cfgs {
		if ct != "" && !c.resp.typeAllowed(ct) {
			continue
		}
		if _, ok := compressors[c.encoding]; !ok {
			compressors[c.encoding] = allowed{order: n, chooseFirst: c.chooseFirst}
			n++
		}
	}
	type pair struct {
		enc string
		q   float64
	}
	var pairs []pair
	for _, tok := range bytes.Split(f.acceptEncoding, []byte(",")) {
		if len(tok) == 0 {
			continue
		}
		p := pair{q: 1}
		name, params, hasParams := bytes.Cut(tok, []byte(";"))
		p.enc = string(bytes.TrimSpace(name))
		if hasParams {
			if k, v, ok := bytes.Cut(params, []byte("=")); ok && bytes.EqualFold(bytes.TrimSpace(k), []byte("q")) {
				q, err := strconv.ParseFloat(string(bytes.TrimSpace(v)), 32)
				if err != nil {
					continue // an unparsable q-value skips the token
				}
				p.q = float64(float32(q))
			}
		}
		pairs = append(pairs, p)
		if p.q == 0 {
			delete(compressors, p.enc)
		}
	}
	if len(pairs) == 0 || len(compressors) == 0 {
		return &decision{encoding: "identity", stat: statNotValid}
	}
	choice := pair{enc: "identity"}
	for _, p := range pairs {
		a, known := compressors[p.enc]
		if !known && p.enc != "identity" && p.enc != "*" {
			continue
		}
		if p.q > choice.q || p.q == choice.q && a.chooseFirst {
			choice = p
		}
	}
	switch {
	case choice.q == 0:
		return &decision{encoding: "identity", stat: statNotValid}
	case choice.enc == "identity":
		return &decision{encoding: "identity", stat: statIdentity}
	case choice.enc == "*":
		first, best := "", n
		for enc, a := range compressors {
			if a.order < best {
				first, best = enc, a.order
			}
		}
		return &decision{encoding: first, stat: statWildcard}
	}
	return &decision{encoding: choice.enc, stat: statValid}
}
