package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// trimStartupPages gives back to the kernel the memory that only start-up
// used: the garbage of loading the bootstrap (a GC, then the free heap
// returned) and the pages of outrider's own executable that start-up read,
// chiefly the package initialisers and the descriptors of every Envoy proto
// registered for typed_config. Those are clean, read-only file pages, kept
// in the page cache and shared with every other outrider on the machine;
// dropping them from this process's mapping costs a minor fault if one is
// read again, and is what the kernel does to them anyway under memory
// pressure. It returns how many kilobytes of the executable's mappings were
// resident before and after.
func trimStartupPages() (before, after int, err error) {
	runtime.GC()
	debug.FreeOSMemory()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, 0, err
	}
	before = residentKB(exe)
	maps, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, 0, err
	}
	defer maps.Close()
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		// 00400000-01a2f000 r-xp 00000000 08:01 1234 /path/to/outrider
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[5] != exe || strings.Contains(f[1], "w") {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		if err := madviseDontNeed(uintptr(start), uintptr(end-start)); err != nil {
			return before, residentKB(exe), fmt.Errorf("madvise %s: %w", f[0], err)
		}
	}
	return before, residentKB(exe), sc.Err()
}

// madviseDontNeed drops the pages of [start, start+n) from this process;
// for a read-only private file mapping the next access reads them back from
// the page cache.
func madviseDontNeed(start, n uintptr) error {
	_, _, e := unix.Syscall(unix.SYS_MADVISE, start, n, unix.MADV_DONTNEED)
	if e != 0 {
		return e
	}
	return nil
}

// residentKB sums the Rss of the mappings of file path in /proc/self/smaps.
func residentKB(path string) int {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in, kb := false, 0
	for sc.Scan() {
		line := sc.Text()
		if fs := strings.Fields(line); len(fs) >= 5 && strings.Contains(fs[0], "-") && !strings.HasSuffix(fs[0], ":") {
			in = len(fs) >= 6 && fs[5] == path
			continue
		}
		if in && strings.HasPrefix(line, "Rss:") {
			if v, err := strconv.Atoi(strings.Fields(line)[1]); err == nil {
				kb += v
			}
		}
	}
	return kb
}
