package testserver

import (
	"context"
	"net"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// trackingListener remembers the connections it accepted, and the calls
// running on each, so that connections can be cut while the listener stays
// open and the cut waited for.
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns map[string]*trackedConn // by remote address
}

func newTrackingListener(l net.Listener) *trackingListener {
	return &trackingListener{Listener: l, conns: map[string]*trackedConn{}}
}

type trackedConn struct {
	net.Conn
	l    *trackingListener
	once sync.Once

	mu      sync.Mutex
	idle    sync.Cond // signalled when calls drops to 0
	calls   int       // calls running on the connection
	dropped bool      // cut by dropAll: no call starts any more
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l}
	tc.idle.L = &tc.mu
	l.mu.Lock()
	l.conns[c.RemoteAddr().String()] = tc
	l.mu.Unlock()
	return tc, nil
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.l.conns[c.RemoteAddr().String()] == c {
			delete(c.l.conns, c.RemoteAddr().String())
		}
		c.l.mu.Unlock()
	})
	return err
}

// dropAll cuts every connection and waits until none of their calls runs.
func (l *trackingListener) dropAll() {
	l.mu.Lock()
	conns := make([]*trackedConn, 0, len(l.conns))
	for _, c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		c.dropped = true
		c.mu.Unlock()
		c.Close()
	}
	for _, c := range conns {
		c.mu.Lock()
		for c.calls > 0 {
			c.idle.Wait()
		}
		c.mu.Unlock()
	}
}

// begin counts a call starting on the connection of ctx. It refuses calls
// of a connection already cut, whose request may still have been read.
func (l *trackingListener) begin(ctx context.Context) (end func(), err error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return func() {}, nil
	}
	l.mu.Lock()
	c := l.conns[p.Addr.String()]
	l.mu.Unlock()
	if c == nil {
		return nil, status.Error(codes.Unavailable, "connection closed")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dropped {
		return nil, status.Error(codes.Unavailable, "connection closed")
	}
	c.calls++
	return func() {
		c.mu.Lock()
		if c.calls--; c.calls == 0 {
			c.idle.Broadcast()
		}
		c.mu.Unlock()
	}, nil
}

func (l *trackingListener) unaryCall(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	end, err := l.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	return handler(ctx, req)
}

func (l *trackingListener) streamCall(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	end, err := l.begin(ss.Context())
	if err != nil {
		return err
	}
	defer end()
	return handler(srv, ss)
}
