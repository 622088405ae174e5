package admin

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
)

// Envoy's (spdlog's) level names, in order, and their slog levels.
var levelNames = []string{"trace", "debug", "info", "warning", "error", "critical", "off"}

var levelValues = map[string]slog.Level{
	"trace":    slog.LevelDebug - 4,
	"debug":    slog.LevelDebug,
	"info":     slog.LevelInfo,
	"warning":  slog.LevelWarn,
	"error":    slog.LevelError,
	"critical": slog.LevelError + 4,
	"off":      slog.LevelError + 100,
}

// components are the Envoy logger names /logging lists and accepts.
var components = []string{
	"admin", "aws", "assert", "backtrace", "client", "config", "connection", "conn_handler",
	"dns", "ext_authz", "filter", "forward_proxy", "grpc", "happy_eyeballs", "hc", "health_checker",
	"http", "http2", "init", "io", "jwt", "lua", "main", "matcher", "misc", "pool", "router",
	"runtime", "secret", "stats", "tracing", "upstream", "udp", "wasm",
}

// logging is the /logging endpoint: a level per Envoy component logger, with
// the process slog level set to the most verbose of them, since one LevelVar
// gates every component.
type logging struct {
	mu     sync.Mutex
	global *slog.LevelVar
	levels map[string]string
}

func newLogging(v *slog.LevelVar) *logging {
	l := &logging{global: v, levels: map[string]string{}}
	name := levelName(v.Level())
	for _, c := range components {
		l.levels[c] = name
	}
	return l
}

// levelName is the Envoy name of the most verbose Envoy level at or above lv.
func levelName(lv slog.Level) string {
	for _, n := range levelNames {
		if levelValues[n] >= lv {
			return n
		}
	}
	return "off"
}

func (l *logging) handle(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, fmt.Sprintf("error: %v", err), http.StatusBadRequest)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	if err := l.change(r.URL.Query()); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(&b, "error: %v\n\n", err)
		b.WriteString("usage: /logging?<name>=<level> (change single level)\n")
		b.WriteString("usage: /logging?paths=name1:level1,name2:level2,... (change multiple levels)\n")
		b.WriteString("usage: /logging?level=<level> (change all levels)\n")
		b.WriteString("levels: ")
		for _, n := range levelNames {
			b.WriteString(n + " ")
		}
		b.WriteString("\n")
	}
	b.WriteString("active loggers:\n")
	for _, c := range components {
		fmt.Fprintf(&b, "  %s: %s\n", c, l.levels[c])
	}
	b.WriteString("\n")
	fmt.Fprint(w, b.String())
}

// change applies Envoy's /logging parameters: level=L, paths=c1:L1,c2:L2 or
// a single component=L. Empty level and paths are ignored, as Envoy does for
// its HTML form.
func (l *logging) change(q url.Values) error {
	for _, k := range []string{"level", "paths"} {
		if v, ok := q[k]; ok && (len(v) == 0 || v[0] == "") {
			delete(q, k)
		}
	}
	if len(q) == 0 {
		return nil
	}
	if len(q) != 1 {
		return errors.New("invalid number of parameters")
	}
	changes := map[string]string{}
	switch {
	case q.Has("level"):
		lv := q.Get("level")
		if _, ok := levelValues[lv]; !ok {
			return errors.New("unknown logger level")
		}
		for _, c := range components {
			changes[c] = lv
		}
	case q.Has("paths"):
		for _, pair := range strings.Split(q.Get("paths"), ",") {
			pair = strings.TrimSpace(pair)
			if pair == "" {
				continue
			}
			name, lv, _ := strings.Cut(pair, ":")
			if name == "" || lv == "" {
				return errors.New("empty logger name or empty logger level")
			}
			if _, ok := levelValues[lv]; !ok {
				return errors.New("unknown logger level")
			}
			changes[name] = lv
		}
	default:
		for name, v := range q {
			if _, ok := levelValues[v[0]]; !ok {
				return errors.New("unknown logger level")
			}
			changes[name] = v[0]
		}
	}
	for name := range changes {
		if _, ok := l.levels[name]; !ok {
			return errors.New("unknown logger name")
		}
	}
	for name, lv := range changes {
		l.levels[name] = lv
	}
	l.apply()
	return nil
}

// apply sets the process level to the most verbose component level.
func (l *logging) apply() {
	names := make([]string, 0, len(l.levels))
	for _, lv := range l.levels {
		names = append(names, lv)
	}
	sort.Slice(names, func(i, j int) bool { return levelValues[names[i]] < levelValues[names[j]] })
	l.global.Set(levelValues[names[0]])
}
