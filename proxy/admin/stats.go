package admin

import (
	"fmt"
	"net/http"
	"regexp"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// MountStats registers "/stats" (?filter=RE2, ?usedonly, ?type=, and
// ?format=json|prometheus|text) and "/stats/prometheus" for st.
func (s *Server) MountStats(st *stats.Store) {
	s.Handle("/stats", "print server stats", false, func(w http.ResponseWriter, r *http.Request) {
		serveStats(w, r, st, r.URL.Query().Get("format"))
	})
	s.Handle("/stats/prometheus", "print server stats in prometheus format", false, func(w http.ResponseWriter, r *http.Request) {
		serveStats(w, r, st, "prometheus")
	})
}

func serveStats(w http.ResponseWriter, r *http.Request, st *stats.Store, format string) {
	q := r.URL.Query()
	var f stats.Filter
	f.UsedOnly = q.Has("usedonly")
	if re := q.Get("filter"); re != "" {
		var err error
		if f.Regex, err = regexp.Compile(re); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, "Invalid re2 regex")
			return
		}
	}
	switch t := q.Get("type"); t {
	case "", "All", "Counters", "Gauges", "Histograms":
		f.Type = t
	case "TextReadouts":
		f.Type = t // none exist: shows nothing
	default:
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, "invalid &type= param: %s", t)
		return
	}
	var err error
	switch format {
	case "", "text":
		err = st.WriteText(w, f)
	case "json":
		w.Header().Set("Content-Type", "application/json")
		err = st.WriteJSON(w, f)
	case "prometheus":
		err = st.WritePrometheus(w, f)
	default:
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, "usage: /stats?format=(json|prometheus|text)\n\n")
		return
	}
	_ = err // the client went away; nothing left to tell it
}
