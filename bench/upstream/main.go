// Command upstream is the fixed upstream of the load comparison: HTTP/1.1 on
// -addr answers "/" with "ok", "/16k" with 16 KiB and "/1m" with 1 MiB, and
// the raw TCP server on -bulk sinks ("u") or sources ("d") bytes after a
// one-byte mode. Both serve keep-alive connections until the peer closes.
package main

import (
	"flag"
	"log"
	"net"
	"net/http"
	"strconv"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18080", "HTTP listen address")
	bulk := flag.String("bulk", "", "raw TCP bulk listen address (empty: none)")
	flag.Parse()
	if *bulk != "" {
		ln, err := net.Listen("tcp", *bulk)
		if err != nil {
			log.Fatal(err)
		}
		go serveBulk(ln)
	}
	log.Fatal(http.ListenAndServe(*addr, newHandler()))
}

// newHandler serves the fixed bodies by path; any other path gets "ok".
func newHandler() http.Handler {
	bodies := map[string][]byte{
		"/16k": make([]byte, 16<<10),
		"/1m":  make([]byte, 1<<20),
	}
	small := []byte("ok")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := bodies[r.URL.Path]
		if !ok {
			body = small
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})
}

// serveBulk accepts connections whose first byte selects the direction:
// 'u' reads and discards until EOF, 'd' writes until the peer goes away.
func serveBulk(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 256<<10)
			if _, err := c.Read(buf[:1]); err != nil {
				return
			}
			switch buf[0] {
			case 'u':
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			case 'd':
				for {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}
		}()
	}
}
