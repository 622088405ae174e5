package drain

import (
	"testing"
	"time"
)

func TestImmediate(t *testing.T) {
	var m Manager
	if m.Draining() || m.ShouldClose() {
		t.Fatal("draining before Start")
	}
	m.Start()
	m.Start()
	select {
	case <-m.Done():
	default:
		t.Fatal("Done not closed")
	}
	if !m.Draining() || !m.ShouldClose() {
		t.Fatal("immediate drain does not close")
	}
}

func TestGradualGrowsOverTime(t *testing.T) {
	m := Manager{Gradual: true, Time: time.Hour}
	m.Start()
	yes := 0
	for i := 0; i < 1000; i++ {
		if m.ShouldClose() {
			yes++
		}
	}
	if yes > 5 {
		t.Fatalf("%d of 1000 closes right after the start of a one-hour gradual drain", yes)
	}
	m.started.Add(-int64(time.Hour)) // pretend the drain time has passed
	if !m.ShouldClose() {
		t.Fatal("gradual drain does not close after its drain time")
	}
}

func TestOnStartRunsOnce(t *testing.T) {
	var m Manager
	var before, after int
	m.OnStart(func() { before++ })
	if before != 0 {
		t.Fatal("hook ran before Start")
	}
	m.Start()
	m.Start()
	if before != 1 {
		t.Fatalf("hook registered before Start ran %d times, want 1", before)
	}
	m.OnStart(func() { after++ })
	if after != 1 {
		t.Fatalf("hook registered after Start ran %d times, want 1 (at once)", after)
	}
}

// StartImmediate closes at once even under a gradual strategy, also when a
// gradual drain had started before it; hooks run once.
func TestStartImmediateOverridesGradual(t *testing.T) {
	for _, startedBefore := range []bool{false, true} {
		m := Manager{Gradual: true, Time: time.Hour}
		hooks := 0
		m.OnStart(func() { hooks++ })
		if startedBefore {
			m.Start()
		}
		m.StartImmediate()
		for i := 0; i < 100; i++ {
			if !m.ShouldClose() {
				t.Fatalf("startedBefore=%v: ShouldClose false after StartImmediate", startedBefore)
			}
		}
		if hooks != 1 {
			t.Fatalf("startedBefore=%v: hooks ran %d times, want 1", startedBefore, hooks)
		}
	}
}
