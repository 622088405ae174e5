package client

import (
	"errors"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
)

// TestUnchangedNotDecoded: a resource pushed again with the bytes last accepted is named in
// Update.Unchanged, not handed over as changed; a late watcher still gets every resource, decoded from
// the cached wire bytes, and Raw is those bytes.
func TestUnchangedNotDecoded(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			sc := cachev3.NewSnapshotCache(m.ads, cachev3.IDHash{}, nil)
			setSnapshot(t, sc, snapshot(t, "1", map[string][]types.Resource{
				ClusterURL: {cluster("a", time.Second), cluster("b", time.Second), cluster("c", time.Second)}}))
			cp := newControlPlane(t, sc)
			c, _ := newClient(t, m, cp, nil)
			rec := newRecorder()
			c.Watch(ClusterType, nil, rec)
			if u := rec.next(t); !slices.Equal(names(u.Resources), []string{"a", "b", "c"}) || len(u.Unchanged) != 0 {
				t.Fatalf("first update: resources %v unchanged %v", names(u.Resources), u.Unchanged)
			}

			setSnapshot(t, sc, snapshot(t, "2", map[string][]types.Resource{
				ClusterURL: {cluster("a", time.Second), cluster("b", 2*time.Second), cluster("c", time.Second), cluster("d", time.Second)}}))
			u := rec.next(t)
			if !slices.Equal(names(u.Resources), []string{"b", "d"}) || len(u.Removed) != 0 {
				t.Fatalf("second update: resources %v removed %v, want [b d] []", names(u.Resources), u.Removed)
			}
			// go-control-plane's delta server sends only what changed; SotW sends all, the rest unchanged.
			want := []string{"a", "c"}
			if m.delta {
				want = nil
			}
			if got := slices.Sorted(slices.Values(u.Unchanged)); !slices.Equal(got, want) {
				t.Errorf("unchanged %v, want %v", got, want)
			}
			if d := timeoutOf(t, u.Resources["b"]); d != 2*time.Second {
				t.Errorf("b's connect_timeout %v, want 2s", d)
			}
			raw, err := proto.Marshal(u.Resources["b"].Msg)
			if err != nil {
				t.Fatal(err)
			}
			back := new(clusterv3.Cluster)
			if err := proto.Unmarshal([]byte(u.Resources["b"].Raw), back); err != nil || !proto.Equal(back, u.Resources["b"].Msg) {
				t.Errorf("Raw of b (%d bytes, marshalled %d) does not decode to Msg: %v", len(u.Resources["b"].Raw), len(raw), err)
			}

			late := newRecorder()
			c.Watch(ClusterType, nil, late)
			lu := late.next(t)
			if !slices.Equal(names(lu.Resources), []string{"a", "b", "c", "d"}) {
				t.Fatalf("late watcher: resources %v", names(lu.Resources))
			}
			for n, want := range map[string]time.Duration{"a": time.Second, "b": 2 * time.Second, "c": time.Second, "d": time.Second} {
				if d := timeoutOf(t, lu.Resources[n]); d != want {
					t.Errorf("late watcher: %s's connect_timeout %v, want %v", n, d, want)
				}
			}
		})
	}
}

// TestNackedBytesNotCached: after the applier refuses a change, the cache holds the last accepted
// bytes, so the old resource pushed again is unchanged and the refused one, pushed again, is a change.
func TestNackedBytesNotCached(t *testing.T) {
	for _, m := range modes {
		if m.delta {
			continue // go-control-plane's delta server does not resend a resource the client NACKed
		}
		t.Run(m.name, func(t *testing.T) {
			sc := cachev3.NewSnapshotCache(m.ads, cachev3.IDHash{}, nil)
			setSnapshot(t, sc, snapshot(t, "1", map[string][]types.Resource{
				ClusterURL: {cluster("a", time.Second), cluster("b", time.Second)}}))
			cp := newControlPlane(t, sc)
			c, _ := newClient(t, m, cp, nil)
			rec := newRecorder()
			c.Watch(ClusterType, nil, rec)
			rec.next(t)

			rec.reject.Store(func(u Update) error {
				if _, ok := u.Resources["a"]; ok && u.Version == "2" {
					return errors.New("refused")
				}
				return nil
			})
			setSnapshot(t, sc, snapshot(t, "2", map[string][]types.Resource{
				ClusterURL: {cluster("a", 2*time.Second), cluster("b", time.Second)}}))
			if u := rec.next(t); !slices.Equal(names(u.Resources), []string{"a"}) || !slices.Equal(u.Unchanged, []string{"b"}) {
				t.Fatalf("version 2: resources %v unchanged %v", names(u.Resources), u.Unchanged)
			}
			cp.waitRequest(ClusterURL, func(r request) bool { return r.sotw.GetErrorDetail() != nil })

			setSnapshot(t, sc, snapshot(t, "3", map[string][]types.Resource{
				ClusterURL: {cluster("a", time.Second), cluster("b", time.Second)}}))
			// Skip go-control-plane's resends of version 2: each NACK gets it
			// again at once, so there can be many before version 3 is set.
			for i := 0; ; i++ {
				u := rec.next(t)
				if u.Version == "2" && i < 1_000_000 {
					continue
				}
				got := slices.Sorted(slices.Values(u.Unchanged))
				if u.Version != "3" || u.Resources != nil || !slices.Equal(got, []string{"a", "b"}) {
					t.Fatalf("version 3: %q resources %v unchanged %v, want a and b unchanged", u.Version, names(u.Resources), got)
				}
				break
			}
			setSnapshot(t, sc, snapshot(t, "4", map[string][]types.Resource{
				ClusterURL: {cluster("a", 2*time.Second), cluster("b", time.Second)}}))
			if u := rec.next(t); !slices.Equal(names(u.Resources), []string{"a"}) || timeoutOf(t, u.Resources["a"]) != 2*time.Second {
				t.Fatalf("version 4: resources %v, want a with 2s", names(u.Resources))
			}
		})
	}
}
