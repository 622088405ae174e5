package upstream

import (
	"net"
	"sync"
	"time"
)

// batchHighWater bounds the bytes a batchConn queues: past it writes block
// until the socket takes some.
const batchHighWater = 1 << 20

// batchConn queues what x/net's HTTP/2 client writes and hands it to the
// socket from one goroutine, one write per batch: x/net flushes each
// request's HEADERS on its own, so concurrent streams cost a syscall each;
// queued, they share one. Write errors are sticky and close the connection
// (x/net's read loop then fails the streams); Close flushes what is queued
// for at most a second.
type batchConn struct {
	net.Conn

	mu      sync.Mutex
	cond    sync.Cond
	queue   []byte
	spare   []byte
	err     error
	closing bool
	done    chan struct{} // closed when writeLoop ends; nil: not started
}

func newBatchConn(c net.Conn) *batchConn {
	b := &batchConn{Conn: c}
	b.cond.L = &b.mu
	return b
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.err == nil && !b.closing && len(b.queue) >= batchHighWater {
		b.cond.Wait()
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.closing {
		return 0, net.ErrClosed
	}
	b.queue = append(b.queue, p...)
	if b.done == nil {
		b.done = make(chan struct{})
		go b.writeLoop()
	}
	b.cond.Broadcast()
	return len(p), nil
}

// writeLoop moves the queue to the socket until the connection closes or a
// write fails; then it closes the socket.
func (b *batchConn) writeLoop() {
	defer close(b.done)
	b.mu.Lock()
	for {
		for len(b.queue) == 0 && !b.closing && b.err == nil {
			b.cond.Wait()
		}
		if b.err != nil || (b.closing && len(b.queue) == 0) {
			break
		}
		buf := b.queue
		b.queue, b.spare = b.spare[:0], nil
		b.mu.Unlock()
		_, err := b.Conn.Write(buf)
		b.mu.Lock()
		if cap(buf) <= 2*batchHighWater {
			b.spare = buf[:0]
		}
		if err != nil && b.err == nil {
			b.err = err
		}
		b.cond.Broadcast()
	}
	b.mu.Unlock()
	_ = b.Conn.Close()
}

// Close flushes the queue (for at most a second) and closes the socket.
func (b *batchConn) Close() error {
	b.mu.Lock()
	if b.closing {
		b.mu.Unlock()
		return nil
	}
	b.closing = true
	started := b.done != nil
	b.cond.Broadcast()
	b.mu.Unlock()
	if !started {
		return b.Conn.Close()
	}
	_ = b.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	<-b.done
	return nil
}
