// Package admin is the frame of Envoy's admin HTTP interface: endpoint
// registration, the home page, /help, /logging and the /stats endpoints.
// Paths match exactly (query ignored), endpoints that mutate server state
// require POST, and unknown paths get a 404 with the command list, as Envoy.
package admin

import (
	"context"
	"errors"
	"fmt"
	"html"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
)

// endpoint is one registered admin path.
type endpoint struct {
	path    string
	help    string
	mutates bool
	h       http.HandlerFunc
}

// Server is an admin interface. The zero Server is unusable; use New.
type Server struct {
	mu        sync.RWMutex
	endpoints map[string]*endpoint
	srv       *http.Server // nil until Serve
	logs      *logging
}

// New returns a Server with "/", "/help" and "/logging" registered. logLevel
// is the process-wide slog level that /logging changes; nil means a private
// LevelVar (levels are then only reported, never applied).
func New(logLevel *slog.LevelVar) *Server {
	if logLevel == nil {
		logLevel = new(slog.LevelVar)
	}
	s := &Server{endpoints: map[string]*endpoint{}, logs: newLogging(logLevel)}
	s.Handle("/", "Admin home page", false, s.home)
	s.Handle("/help", "print out list of admin commands", false, s.help)
	s.Handle("/logging", "query/change logging levels", true, s.logs.handle)
	return s
}

// Handle registers an endpoint at exactly path. help is its one-line
// description for "/" and "/help". mutates marks endpoints that change server
// state: those answer anything but POST with 405, as Envoy. A duplicate path
// panics.
func (s *Server) Handle(path, help string, mutates bool, h http.HandlerFunc) {
	if !strings.HasPrefix(path, "/") {
		panic(fmt.Sprintf("admin: path %q must start with /", path))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.endpoints[path]; dup {
		panic(fmt.Sprintf("admin: duplicate handler for %q", path))
	}
	s.endpoints[path] = &endpoint{path: path, help: help, mutates: mutates, h: h}
}

// Handler is the admin interface as an http.Handler.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Type", "text/plain; charset=UTF-8")
	hdr.Set("Cache-Control", "no-cache, max-age=0")
	hdr.Set("X-Content-Type-Options", "nosniff")
	s.mu.RLock()
	e := s.endpoints[r.URL.Path]
	s.mu.RUnlock()
	if e == nil {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, "invalid path. ")
		s.writeHelp(w)
		return
	}
	if e.mutates && r.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed)
		fmt.Fprintf(w, "Method %s not allowed, POST required.", r.Method)
		return
	}
	e.h(w, r)
}

// Serve answers admin requests on l until Shutdown; it returns nil after a
// Shutdown.
func (s *Server) Serve(l net.Listener) error {
	srv := &http.Server{Handler: s.Handler()}
	s.mu.Lock()
	if s.srv != nil {
		s.mu.Unlock()
		return errors.New("admin: Serve called twice")
	}
	s.srv = srv
	s.mu.Unlock()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin: serve %s: %w", l.Addr(), err)
	}
	return nil
}

// Shutdown stops Serve, waiting for in-flight requests until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.RLock()
	srv := s.srv
	s.mu.RUnlock()
	if srv == nil {
		return nil
	}
	return srv.Shutdown(ctx)
}

// sorted returns the endpoints in path order.
func (s *Server) sorted() []*endpoint {
	s.mu.RLock()
	out := make([]*endpoint, 0, len(s.endpoints))
	for _, e := range s.endpoints {
		out = append(out, e)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out
}

func (s *Server) writeHelp(w http.ResponseWriter) {
	var b strings.Builder
	b.WriteString("admin commands are:\n")
	for _, e := range s.sorted() {
		fmt.Fprintf(&b, "  %s: %s\n", e.path, e.help)
	}
	fmt.Fprint(w, b.String())
}

func (s *Server) help(w http.ResponseWriter, _ *http.Request) { s.writeHelp(w) }

// home is Envoy's admin home page: a table of every endpoint with its help;
// GET endpoints are links, mutating ones are POST buttons.
func (s *Server) home(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=UTF-8")
	var b strings.Builder
	b.WriteString("<!DOCTYPE html>\n<html lang='en'>\n<head>\n  <title>Envoy Admin</title>\n" +
		"  <style>\n    .home-table { font-family: sans-serif; font-size: medium; border-collapse: collapse; }\n" +
		"    .home-data { padding: 0.2em 1em; text-align: left; }\n" +
		"    .button-as-link { background: none; border: none; color: #0000ee; cursor: pointer; font-size: medium; padding: 0; text-decoration: underline; }\n" +
		"  </style>\n</head>\n<body>\n<table class='home-table'>\n  <thead>\n    <tr>\n" +
		"      <th class='home-data'>Command</th>\n      <th class='home-data'>Description</th>\n    </tr>\n  </thead>\n  <tbody>\n")
	for _, e := range s.sorted() {
		if e.path == "/" {
			continue
		}
		name := html.EscapeString(strings.TrimPrefix(e.path, "/"))
		help := html.EscapeString(e.help)
		if e.mutates {
			fmt.Fprintf(&b, "    <tr class='vert-space'>\n      <td class='home-data'><form action='%s' method='post' id='%s' class='home-form'></form>"+
				"<button class='button-as-link' form='%s'>%s</button></td>\n      <td class='home-data'>%s</td>\n    </tr>\n",
				name, name, name, name, help)
		} else {
			fmt.Fprintf(&b, "    <tr class='vert-space'>\n      <td class='home-data'><a href='%s'>%s</a></td>\n      <td class='home-data'>%s</td>\n    </tr>\n",
				name, name, help)
		}
	}
	b.WriteString("  </tbody>\n</table>\n</body>\n</html>\n")
	fmt.Fprint(w, b.String())
}
