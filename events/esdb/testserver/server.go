package testserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/protos/gossip"
	"github.com/EventStore/EventStore-Client-Go/v4/protos/serverfeatures"
	"github.com/EventStore/EventStore-Client-Go/v4/protos/shared"
	api "github.com/EventStore/EventStore-Client-Go/v4/protos/streams"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"

	"github.com/imsync/imsync/events"
	_ "github.com/imsync/imsync/events/protoconflict" // the client's gossip.proto clashes with protoactor-go's
)

// Options configure a Server. The zero value serves an in-memory store on
// a random loopback port.
type Options struct {
	// Listen is the TCP address to serve on (default "127.0.0.1:0").
	Listen string
	// Store is the store to serve. The server does not close it.
	Store events.Store
	// Dir, when Store is nil, is the directory of the embedded store the
	// server opens (and closes on Close). Empty: an in-memory store.
	Dir string
	// Logger receives the store's errors (default slog.Default()).
	Logger *slog.Logger
}

// Server serves the EventStoreDB gRPC protocol subset over a store.
type Server struct {
	store     events.Store
	ownsStore bool
	lis       *trackingListener
	grpc      *grpc.Server
	served    chan struct{}
	instance  uuid.UUID
	meta      *metaStreams
	marks     highWater

	closeOnce sync.Once
	closeErr  error
}

// Version is the EventStoreDB version the server reports: the client
// v4.2.0 targets this protocol.
const Version = "24.10.0"

// keepAliveMinTime is the shortest interval between client pings the
// server accepts. The official client pings every 10 s by default.
const keepAliveMinTime = 5 * time.Second

// maxMessageSize bounds one gRPC message. Events up to the largest append
// pass, so that the store refuses oversize ones with its own errors.
const maxMessageSize = events.MaxAppendSize + 64<<10

// Start opens the store (unless Options.Store is set), listens and serves
// until Close. ctx bounds the start only.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{store: opts.Store, served: make(chan struct{}), instance: uuid.New()}
	if s.store == nil {
		var (
			st  *events.Embedded
			err error
		)
		eo := events.Options{Logger: opts.Logger}
		if opts.Dir != "" {
			st, err = events.Open(opts.Dir, eo)
		} else {
			st, err = events.OpenInMemory(eo)
		}
		if err != nil {
			return nil, err
		}
		s.store, s.ownsStore = st, true
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", opts.Listen)
	if err != nil {
		if s.ownsStore {
			s.store.Close()
		}
		return nil, fmt.Errorf("testserver: listen: %w", err)
	}
	s.lis = &trackingListener{Listener: l, conns: map[*trackedConn]struct{}{}}
	s.meta = newMetaStreams(s.store, &s.marks)
	s.grpc = grpc.NewServer(
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepAliveMinTime, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(maxMessageSize),
		grpc.WaitForHandlers(true),
	)
	api.RegisterStreamsServer(s.grpc, &streamsService{s: s})
	gossip.RegisterGossipServer(s.grpc, &gossipService{s: s})
	serverfeatures.RegisterServerFeaturesServer(s.grpc, featuresService{})
	go func() {
		defer close(s.served)
		_ = s.grpc.Serve(s.lis) // returns when Close stops the server
	}()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// hostPort is the address clients dial: a loopback address when the
// server listens on every interface.
func (s *Server) hostPort() string {
	a := s.lis.Addr().(*net.TCPAddr)
	host := a.IP.String()
	if a.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(a.Port))
}

// URL is the connection string of the official client for this server:
// esdb://HOST:PORT?tls=false (one node, no gossip).
func (s *Server) URL() string { return "esdb://" + s.hostPort() + "?tls=false" }

// DiscoverURL is the connection string that goes through gossip first:
// esdb+discover://HOST:PORT?tls=false.
func (s *Server) DiscoverURL() string { return "esdb+discover://" + s.hostPort() + "?tls=false" }

// DropConnections closes every client connection at once, as a network
// failure would: streaming calls end with an error on the client side, and
// the server goes on listening, so clients reconnect. Writes the store
// acknowledged before stay; a write cut in flight either happened or not.
func (s *Server) DropConnections() { s.lis.closeConns() }

// Close stops listening, ends every call, waits for the handlers to return
// and closes the store if the server opened it.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.grpc.Stop()
		<-s.served
		if s.ownsStore {
			s.closeErr = s.store.Close()
		}
	})
	return s.closeErr
}

// trackingListener remembers the connections it accepted so that they can
// be cut while the listener stays open.
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

type trackedConn struct {
	net.Conn
	l    *trackingListener
	once sync.Once
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns[tc] = struct{}{}
	l.mu.Unlock()
	return tc, nil
}

func (l *trackingListener) closeConns() {
	l.mu.Lock()
	conns := make([]*trackedConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return err
}

// gossipService answers cluster discovery with one live leader: this node,
// at the address the client reached it on.
type gossipService struct {
	gossip.UnimplementedGossipServer
	s *Server
}

func (g *gossipService) Read(ctx context.Context, _ *shared.Empty) (*gossip.ClusterInfo, error) {
	addr := g.s.hostPort()
	if p, ok := peer.FromContext(ctx); ok && p.LocalAddr != nil {
		addr = p.LocalAddr.String()
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, err
	}
	return &gossip.ClusterInfo{Members: []*gossip.MemberInfo{{
		InstanceId:   uuidToProto(g.s.instance, false),
		TimeStamp:    time.Now().UnixNano() / 100,
		State:        gossip.MemberInfo_Leader,
		IsAlive:      true,
		HttpEndPoint: &gossip.EndPoint{Address: host, Port: uint32(port)},
	}}}, nil
}

// featuresService lists the methods served, so that the client does not
// try BatchAppend or persistent subscriptions.
type featuresService struct {
	serverfeatures.UnimplementedServerFeaturesServer
}

func (featuresService) GetSupportedMethods(context.Context, *shared.Empty) (*serverfeatures.SupportedMethods, error) {
	const streams = "event_store.client.streams.streams"
	out := &serverfeatures.SupportedMethods{EventStoreServerVersion: Version}
	for _, m := range []string{"read", "append", "delete", "tombstone"} {
		out.Methods = append(out.Methods, &serverfeatures.SupportedMethod{MethodName: m, ServiceName: streams})
	}
	out.Methods = append(out.Methods,
		&serverfeatures.SupportedMethod{MethodName: "read", ServiceName: "event_store.client.gossip.gossip"},
		&serverfeatures.SupportedMethod{MethodName: "getsupportedmethods", ServiceName: "event_store.client.server_features.serverfeatures"})
	return out, nil
}

var errNoOptions = errors.New("request without options")
