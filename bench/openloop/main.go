// Command openloop is the constant-rate (open-loop, wrk2-style) latency
// generator of the load comparison: it schedules HTTP/1.1 keep-alive GETs at
// a fixed rate for a fixed time and measures each from its scheduled send
// time, so a stalled proxy is charged for every request it delayed.
// It prints one summary line (key=value) and can write the latency
// distribution as CSV (quantile,latency_us) for bench/plot.
package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:18081/", "URL to GET")
	rate := flag.Int("rate", 1000, "requests per second")
	dur := flag.Duration("d", 10*time.Second, "measured duration")
	warmup := flag.Duration("warmup", time.Second, "unmeasured duration before it, at the same rate")
	conns := flag.Int("c", 64, "connections (and concurrent requests)")
	out := flag.String("out", "", "write the latency distribution CSV here")
	flag.Parse()
	if *rate <= 0 || *dur <= 0 || *conns <= 0 {
		fmt.Fprintln(os.Stderr, "openloop: -rate, -d and -c must be positive")
		os.Exit(2)
	}
	h, errs := run(*url, *rate, *warmup, *dur, *conns)
	fmt.Printf("rate=%d ok=%d errors=%d p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f\n",
		*rate, h.Count(), errs, ms(h.Quantile(0.5)), ms(h.Quantile(0.9)), ms(h.Quantile(0.99)),
		ms(h.Quantile(0.999)), ms(h.Max()))
	if *out != "" {
		if err := writeCSV(*out, h); err != nil {
			fmt.Fprintln(os.Stderr, "openloop:", err)
			os.Exit(1)
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// run sends rate requests per second for warmup+dur and returns the
// histogram of the requests scheduled after the warm-up, and the error count.
func run(url string, rate int, warmup, dur time.Duration, conns int) (*Histogram, int64) {
	tr := &http.Transport{
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	interval := time.Second / time.Duration(rate)
	total := int((warmup + dur) / interval)
	start := time.Now()
	measureFrom := start.Add(warmup)
	// The schedule channel holds every send time, so the scheduler never
	// waits for busy workers: their backlog shows up as latency.
	sched := make(chan time.Time, total)
	var errs atomic.Int64
	hists := make([]Histogram, conns)
	var wg sync.WaitGroup
	for w := range conns {
		wg.Go(func() {
			for at := range sched {
				err := get(client, url)
				if at.Before(measureFrom) {
					continue
				}
				if err != nil {
					errs.Add(1)
					continue
				}
				hists[w].Record(time.Since(at))
			}
		})
	}
	for i := range total {
		at := start.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		sched <- at
	}
	close(sched)
	wg.Wait()
	var all Histogram
	for i := range hists {
		all.Merge(&hists[i])
	}
	return &all, errs.Load()
}

// get fetches url and reads the whole body.
func get(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// writeCSV writes quantile,latency_us rows at HDR-style log-spaced quantiles
// (0, 0.5, 0.75, 0.875, ... up to 0.99999) and the maximum.
func writeCSV(path string, h *Histogram) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("out %q: %w", path, err)
	}
	fmt.Fprintln(f, "quantile,latency_us")
	for _, q := range quantiles() {
		fmt.Fprintf(f, "%.6f,%.1f\n", q, float64(h.Quantile(q))/1e3)
	}
	fmt.Fprintf(f, "%.6f,%.1f\n", 1.0, float64(h.Max())/1e3)
	if err := f.Close(); err != nil {
		return fmt.Errorf("out %q: %w", path, err)
	}
	return nil
}

// quantiles returns 0 and then 1-10^(-k/10) for k = 1..50 (up to 0.99999).
func quantiles() []float64 {
	qs := []float64{0}
	for k := 1; k <= 50; k++ {
		qs = append(qs, 1-math.Pow(10, -float64(k)/10))
	}
	return qs
}
