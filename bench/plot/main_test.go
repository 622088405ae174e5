package main

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestQToXAndTicks(t *testing.T) {
	for q, want := range map[float64]float64{0: 0, 0.9: 1, 0.99: 2, 0.999: 3} {
		if got := qToX(q); math.Abs(got-want) > 1e-9 {
			t.Errorf("qToX(%v) = %v, want %v", q, got, want)
		}
	}
	ts := percentileTicks{}.Ticks(0, 5.2)
	want := []string{"0%", "90%", "99%", "99.9%", "99.99%", "99.999%"}
	if len(ts) != len(want) {
		t.Fatalf("ticks %v", ts)
	}
	for i, tk := range ts {
		if tk.Label != want[i] {
			t.Errorf("tick %d = %q, want %q", i, tk.Label, want[i])
		}
	}
}

func TestRenderWritesPNG(t *testing.T) {
	dir := t.TempDir()
	csv := filepath.Join(dir, "openloop-outrider.csv")
	if err := os.WriteFile(csv, []byte("quantile,latency_us\n0,100\n0.5,200\n0.99,900\n1,5000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := readSeries(csv)
	if err != nil {
		t.Fatal(err)
	}
	if s.name != "outrider" || len(s.pts) != 3 || s.pts[2].Y != 0.9 {
		t.Fatalf("series %+v", s)
	}
	out := filepath.Join(dir, "x.png")
	if err := render(out, "t", []string{csv}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil || len(b) < 8 || string(b[1:4]) != "PNG" {
		t.Fatalf("not a PNG: %v, %d bytes", err, len(b))
	}
	bad := filepath.Join(dir, "bad.csv")
	os.WriteFile(bad, []byte("quantile,latency_us\n0.5\n"), 0o644)
	if _, err := readSeries(bad); err == nil {
		t.Error("malformed CSV accepted")
	}
}
