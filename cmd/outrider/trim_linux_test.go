package main

import (
	"strings"
	"testing"
)

// TestTrimStartupPages gives back this test binary's start-up pages: fewer of
// the executable's pages stay resident, and code and read-only data read
// afterwards (formatting, which walks tables in rodata) still work.
func TestTrimStartupPages(t *testing.T) {
	before, after, err := trimStartupPages()
	if err != nil {
		t.Fatal(err)
	}
	if before == 0 || after >= before {
		t.Fatalf("executable resident before %d KiB, after %d KiB: want fewer after", before, after)
	}
	if got := strings.ToUpper("still works"); got != "STILL WORKS" {
		t.Fatal(got)
	}
	t.Logf("executable resident: %d KiB before, %d KiB after", before, after)
}
