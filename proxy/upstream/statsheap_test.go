package upstream

import (
	"fmt"
	"runtime"
	"testing"
)

// BenchmarkClusterHeap adds 5,000 static clusters without endpoints (so
// mostly what compile creates: stats, circuit breakers, the Cluster) and
// reports the live heap they add per cluster, their parsed configs
// excluded. Run with -benchtime=1x.
func BenchmarkClusterHeap(b *testing.B) {
	const n = 5000
	for range b.N {
		b.StopTimer()
		m, st := newTestManager(b)
		js := make([]string, n)
		for i := range js {
			js[i] = fmt.Sprintf(`{"name":"svc-%05d","connect_timeout":"1s"}`, i)
		}
		cfgBytes := liveHeap()
		cfgs := make([]any, n)
		for i := range cfgs {
			cfgs[i] = parseCluster(b, js[i])
		}
		cfgBytes = liveHeap() - cfgBytes
		before := liveHeap()
		b.StartTimer()
		for i := range js {
			mustAdd(b, m, js[i])
		}
		b.StopTimer()
		b.ReportMetric(float64(liveHeap()-before-cfgBytes)/n, "heap-B/cluster")
		b.ReportMetric(float64(len(st.Counters())+len(st.Gauges()))/n, "stats/cluster")
		runtime.KeepAlive(cfgs)
		m.Close()
	}
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
