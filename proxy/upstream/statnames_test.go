package upstream

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files under testdata/")

// TestClusterStatNames pins the full name and kind of every stat a cluster
// creates at compile time (cluster, circuit breakers with and without
// track_remaining, outlier detection, health checks, ring hash and Maglev),
// and that replacing a cluster adds none.
func TestClusterStatNames(t *testing.T) {
	for _, tc := range []struct{ name, cluster string }{
		{"plain", `{"name":"p","connect_timeout":"1s"}`},
		{"full", `{"name":"f","connect_timeout":"1s","lb_policy":"RING_HASH",
			"circuit_breakers":{"thresholds":[{"track_remaining":true},{"priority":"HIGH"}]},
			"outlier_detection":{},
			"health_checks":[{"timeout":"1s","interval":"60s","unhealthy_threshold":1,"healthy_threshold":1,"tcp_health_check":{}}]}`},
		{"maglev", `{"name":"m.with.dots","connect_timeout":"1s","lb_policy":"MAGLEV"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, st := newTestManager(t)
			mustAdd(t, m, tc.cluster)
			var b strings.Builder
			for _, c := range st.Counters() {
				b.WriteString("counter " + c.Name() + "\n")
			}
			for _, g := range st.Gauges() {
				b.WriteString("gauge " + g.Name() + "\n")
			}
			for _, h := range st.Histograms() {
				b.WriteString("histogram " + h.Name() + "\n")
			}
			got := b.String()
			path := filepath.Join("testdata", "statnames_"+tc.name+".golden")
			if *updateGolden {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("stat names differ from %s:\n%s", path, got)
			}
			n := len(st.Counters()) + len(st.Gauges())
			mustAdd(t, m, strings.Replace(tc.cluster, `"1s"`, `"2s"`, 1))
			if n2 := len(st.Counters()) + len(st.Gauges()); n2 != n {
				t.Errorf("replacing the cluster: %d stats, had %d", n2, n)
			}
		})
	}
}
