package buffer

import "testing"

func TestSizeClassesAndRefs(t *testing.T) {
	for _, tc := range []struct{ ask, want int }{{1, 512}, {512, 512}, {513, 4096}, {64 << 10, 64 << 10}, {100 << 10, 100 << 10}} {
		s := Get(tc.ask)
		if s.Cap() != tc.want {
			t.Errorf("Get(%d) cap %d, want %d", tc.ask, s.Cap(), tc.want)
		}
		s.Ref()
		s.Release()
		if s.Refs() != 1 {
			t.Errorf("refs %d after Ref+Release, want 1", s.Refs())
		}
		s.Release()
	}
}

func TestOverReleasePanics(t *testing.T) {
	s := Get(10)
	s.Release()
	defer func() {
		if recover() == nil {
			t.Fatal("second Release did not panic")
		}
	}()
	s.Release()
}

func TestPooledGetDoesNotAllocate(t *testing.T) {
	Get(4096).Release()
	if n := testing.AllocsPerRun(100, func() { Get(4096).Release() }); n != 0 {
		t.Fatalf("%v allocs, want 0", n)
	}
}
