// Command plot renders the open-loop latency distributions written by
// bench/openloop (CSV quantile,latency_us; one file per proxy, named
// openloop-<proxy>.csv) as one PNG, HDR-histogram style: percentile on a
// log(1/(1-q)) axis, latency on a log axis. It is its own module so the main
// module does not depend on gonum/plot.
package main

import (
	"encoding/csv"
	"flag"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

func main() {
	out := flag.String("out", "latency.png", "PNG to write")
	title := flag.String("title", "Open-loop latency", "plot title")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: plot [-out file.png] [-title t] openloop-<proxy>.csv ...")
		os.Exit(2)
	}
	if err := render(*out, *title, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "plot:", err)
		os.Exit(1)
	}
}

// series is one proxy's distribution.
type series struct {
	name string
	pts  plotter.XYs
}

// render draws every CSV as one line and saves the PNG.
func render(out, title string, files []string) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "percentile"
	p.Y.Label.Text = "latency (ms, log)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.X.Tick.Marker = percentileTicks{}
	p.Add(plotter.NewGrid())
	p.Legend.Top = false // bottom right: below the tails
	p.Legend.Left = false
	palette := []color.Color{
		color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
		color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
		color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}, color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
	}
	for i, f := range files {
		s, err := readSeries(f)
		if err != nil {
			return err
		}
		l, err := plotter.NewLine(s.pts)
		if err != nil {
			return fmt.Errorf("file %q: %w", f, err)
		}
		l.Color = palette[i%len(palette)]
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(s.name, l)
	}
	if err := p.Save(8*vg.Inch, 5*vg.Inch, out); err != nil {
		return fmt.Errorf("out %q: %w", out, err)
	}
	return nil
}

// readSeries reads quantile,latency_us rows; the name comes from the file
// name. Quantile 1 (the maximum) is dropped: it has no finite x.
func readSeries(path string) (series, error) {
	name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(path), "openloop-"), ".csv")
	f, err := os.Open(path)
	if err != nil {
		return series{}, fmt.Errorf("file %q: %w", path, err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return series{}, fmt.Errorf("file %q: %w", path, err)
	}
	s := series{name: name}
	for i, r := range rows {
		if i == 0 && len(r) > 0 && r[0] == "quantile" {
			continue
		}
		if len(r) != 2 {
			return series{}, fmt.Errorf("file %q: row %d: want 2 columns, got %d", path, i+1, len(r))
		}
		q, err1 := strconv.ParseFloat(r[0], 64)
		us, err2 := strconv.ParseFloat(r[1], 64)
		if err1 != nil || err2 != nil {
			return series{}, fmt.Errorf("file %q: row %d: not numbers: %q", path, i+1, r)
		}
		if q >= 1 || us <= 0 {
			continue
		}
		s.pts = append(s.pts, plotter.XY{X: qToX(q), Y: us / 1000})
	}
	if len(s.pts) == 0 {
		return series{}, fmt.Errorf("file %q: no points", path)
	}
	return s, nil
}

// qToX maps a quantile to the HDR x axis: -log10(1-q), so 90% is 1, 99% is 2.
func qToX(q float64) float64 { return -math.Log10(1 - q) }

// percentileTicks labels x = 0, 1, 2, ... as 0%, 90%, 99%, 99.9%, ...
type percentileTicks struct{}

// Ticks implements plot.Ticker.
func (percentileTicks) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for x := math.Ceil(lo); x <= hi; x++ {
		label := fmt.Sprintf("%.*f%%", max(0, int(x)-2), 100*(1-math.Pow(10, -x)))
		ts = append(ts, plot.Tick{Value: x, Label: label})
	}
	return ts
}
