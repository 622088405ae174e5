package stats

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Filter selects the stats an admin output shows. The zero Filter shows all.
type Filter struct {
	Regex    *regexp.Regexp // nil = every name; else names it matches anywhere
	UsedOnly bool           // only stats changed at least once (histograms: merged values)
	Type     string         // "" or "All" = every type; "Counters", "Gauges", "Histograms"
}

func (f Filter) show(kind, name string, used bool) bool {
	if f.Type != "" && f.Type != "All" && f.Type != kind {
		return false
	}
	if f.UsedOnly && !used {
		return false
	}
	return f.Regex == nil || f.Regex.MatchString(name)
}

// scalar is a counter or gauge value to print.
type scalar struct {
	name string
	text string
}

func (s *Store) scalars(f Filter) []scalar {
	var out []scalar
	for _, c := range s.namedCounters() {
		if f.show("Counters", c.name, c.c.Used()) {
			out = append(out, scalar{c.name, strconv.FormatUint(c.c.Value(), 10)})
		}
	}
	for _, g := range s.namedGauges() {
		if f.show("Gauges", g.name, g.g.Used()) {
			out = append(out, scalar{g.name, strconv.FormatInt(g.g.Value(), 10)})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func (s *Store) shownHistograms(f Filter) []*Histogram {
	var out []*Histogram
	for _, h := range s.Histograms() {
		if f.show("Histograms", h.name, h.Used()) {
			out = append(out, h)
		}
	}
	return out
}

// WriteText writes Envoy's /stats text output: counters and gauges as
// "name: value" sorted by name, then histograms as their quantile summary
// "name: P0(interval,cumulative) P25(...) ..." or "name: No recorded values".
func (s *Store) WriteText(w io.Writer, f Filter) error {
	bw := bufio.NewWriter(w)
	for _, sc := range s.scalars(f) {
		bw.WriteString(sc.name)
		bw.WriteString(": ")
		bw.WriteString(sc.text)
		bw.WriteByte('\n')
	}
	for _, h := range s.shownHistograms(f) {
		bw.WriteString(h.name)
		bw.WriteString(": ")
		if !h.Used() {
			bw.WriteString("No recorded values\n")
			continue
		}
		iv, cu := h.Statistics()
		for i, q := range SupportedQuantiles {
			if i > 0 {
				bw.WriteByte(' ')
			}
			fmt.Fprintf(bw, "P%s(%s,%s)", formatG(100*q), formatShortest(iv.Quantiles[i]), formatShortest(cu.Quantiles[i]))
		}
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

// WriteJSON writes Envoy's /stats?format=json output.
func (s *Store) WriteJSON(w io.Writer, f Filter) error {
	bw := bufio.NewWriter(w)
	bw.WriteString(`{"stats":[`)
	first := true
	for _, sc := range s.scalars(f) {
		if !first {
			bw.WriteByte(',')
		}
		first = false
		bw.WriteString(`{"name":`)
		writeJSONString(bw, sc.name)
		bw.WriteString(`,"value":`)
		bw.WriteString(sc.text)
		bw.WriteByte('}')
	}
	if hs := s.shownHistograms(f); len(hs) > 0 {
		if !first {
			bw.WriteByte(',')
		}
		bw.WriteString(`{"histograms":{"supported_quantiles":[`)
		for i, q := range SupportedQuantiles {
			if i > 0 {
				bw.WriteByte(',')
			}
			bw.WriteString(formatG(100 * q))
		}
		bw.WriteString(`],"computed_quantiles":[`)
		for i, h := range hs {
			if i > 0 {
				bw.WriteByte(',')
			}
			bw.WriteString(`{"name":`)
			writeJSONString(bw, h.name)
			bw.WriteString(`,"values":[`)
			iv, cu := h.Statistics()
			for j := range SupportedQuantiles {
				if j > 0 {
					bw.WriteByte(',')
				}
				bw.WriteString(`{"cumulative":`)
				bw.WriteString(jsonNumber(cu.Quantiles[j]))
				bw.WriteString(`,"interval":`)
				bw.WriteString(jsonNumber(iv.Quantiles[j]))
				bw.WriteByte('}')
			}
			bw.WriteString(`]}`)
		}
		bw.WriteString(`]}}`)
	}
	bw.WriteString("]}")
	return bw.Flush()
}

// promMetric is one stat in a Prometheus family.
type promMetric struct {
	name   string
	labels string
	value  string
	hist   *Histogram
}

// WritePrometheus writes Envoy's /stats/prometheus text exposition: counters,
// then gauges, then histograms, each grouped into families by tag-extracted
// name ("envoy_" + name with non [a-zA-Z0-9_] as '_'), families sorted by name
// and metrics within a family sorted by full stat name.
func (s *Store) WritePrometheus(w io.Writer, f Filter) error {
	bw := bufio.NewWriter(w)
	var counters, gauges, hists []promMetric
	for _, c := range s.namedCounters() {
		if f.show("Counters", c.name, c.c.Used()) {
			counters = append(counters, promMetric{name: c.name, value: strconv.FormatUint(c.c.Value(), 10)})
		}
	}
	for _, g := range s.namedGauges() {
		if f.show("Gauges", g.name, g.g.Used()) {
			gauges = append(gauges, promMetric{name: g.name, value: strconv.FormatInt(g.g.Value(), 10)})
		}
	}
	for _, h := range s.shownHistograms(f) {
		hists = append(hists, promMetric{name: h.name, hist: h})
	}
	writeFamilies(bw, "counter", counters)
	writeFamilies(bw, "gauge", gauges)
	writeFamilies(bw, "histogram", hists)
	return bw.Flush()
}

func writeFamilies(bw *bufio.Writer, typ string, metrics []promMetric) {
	families := map[string][]promMetric{}
	for _, m := range metrics {
		extracted, tags := TagExtract(m.name)
		m.labels = formatLabels(tags)
		families[extracted] = append(families[extracted], m)
	}
	names := make([]string, 0, len(families))
	for n := range families {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fam := families[n]
		sort.Slice(fam, func(i, j int) bool { return fam[i].name < fam[j].name })
		prom := "envoy_" + sanitizeName(n)
		fmt.Fprintf(bw, "# TYPE %s %s\n", prom, typ)
		for _, m := range fam {
			if m.hist == nil {
				fmt.Fprintf(bw, "%s{%s} %s\n", prom, m.labels, m.value)
				continue
			}
			_, cu := m.hist.Statistics()
			hl := m.labels
			if hl != "" {
				hl += ","
			}
			for i, b := range defaultBuckets {
				fmt.Fprintf(bw, "%s_bucket{%sle=\"%s\"} %d\n", prom, hl, formatG32(b), cu.Buckets[i])
			}
			fmt.Fprintf(bw, "%s_bucket{%sle=\"+Inf\"} %d\n", prom, hl, cu.Count)
			fmt.Fprintf(bw, "%s_sum{%s} %s\n", prom, m.labels, formatG32(cu.Sum))
			fmt.Fprintf(bw, "%s_count{%s} %d\n", prom, m.labels, cu.Count)
		}
	}
}

func formatLabels(tags []Tag) string {
	var b strings.Builder
	for i, t := range tags {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(sanitizeName(t.Name))
		b.WriteString(`="`)
		b.WriteString(sanitizeValue(t.Value))
		b.WriteByte('"')
	}
	return b.String()
}

// sanitizeName replaces every character outside [a-zA-Z0-9_] with '_'.
func sanitizeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(isAlnum(c) || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

var labelValueEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)

func sanitizeValue(s string) string { return labelValueEscaper.Replace(s) }

// formatShortest formats as libfmt's "{}" for a double: the shortest
// round-trip digits, fixed notation for decimal exponents in [-4, 16), "nan".
func formatShortest(v float64) string {
	switch {
	case math.IsNaN(v):
		return "nan"
	case math.IsInf(v, 1):
		return "inf"
	case math.IsInf(v, -1):
		return "-inf"
	case v == 0:
		return "0"
	}
	e := strconv.FormatFloat(v, 'e', -1, 64)
	exp, _ := strconv.Atoi(e[strings.IndexByte(e, 'e')+1:])
	if exp < -4 || exp >= 16 {
		return e
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// formatG formats as C's "%g" (six significant digits).
func formatG(v float64) string { return formatCG(v, 6) }

// formatG32 formats as C's "%.32g".
func formatG32(v float64) string { return formatCG(v, 32) }

// formatCG is C's %.<p>g: scientific if the exponent is < -4 or >= p, else
// fixed, with trailing zeros removed.
func formatCG(v float64, p int) string {
	if math.IsNaN(v) {
		return "nan"
	}
	if math.IsInf(v, 0) {
		if v > 0 {
			return "inf"
		}
		return "-inf"
	}
	e := strconv.FormatFloat(v, 'e', p-1, 64)
	ei := strings.IndexByte(e, 'e')
	exp, _ := strconv.Atoi(e[ei+1:])
	if exp < -4 || exp >= p {
		mant := trimZeros(e[:ei])
		return mant + e[ei:]
	}
	return trimZeros(strconv.FormatFloat(v, 'f', p-1-exp, 64))
}

func trimZeros(s string) string {
	if !strings.Contains(s, ".") {
		return s
	}
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// jsonNumber formats a double as Envoy's JSON streamer: null for NaN.
func jsonNumber(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "null"
	}
	return formatShortest(v)
}

func writeJSONString(bw *bufio.Writer, s string) {
	bw.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			bw.WriteString(`\"`)
		case '\\':
			bw.WriteString(`\\`)
		case '\n':
			bw.WriteString(`\n`)
		case '\r':
			bw.WriteString(`\r`)
		case '\t':
			bw.WriteString(`\t`)
		case '\b':
			bw.WriteString(`\b`)
		case '\f':
			bw.WriteString(`\f`)
		default:
			if c < 0x20 {
				fmt.Fprintf(bw, `\u%04x`, c)
			} else {
				bw.WriteByte(c)
			}
		}
	}
	bw.WriteByte('"')
}
