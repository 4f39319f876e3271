package actors

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/etcd"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdLeaseTTL: a member's registration in etcd is attached to a lease of
// this many seconds, which the member keeps alive (about every second).
// A member that dies without leaving (SIGKILL, a lost machine) keeps its
// registration until the lease expires: the others drop it from the
// topology within this TTL plus etcd's expiry check (half a second) and
// the watch's delivery. Three seconds leaves a live member two missed
// keep-alives of slack; etcd refuses nothing shorter than its minimum
// (2 s with its default election timeout).
const EtcdLeaseTTL = 3 * time.Second

// EtcdKeyPrefix is where members register: one key per member,
// EtcdKeyPrefix/CLUSTER/CLUSTER@MEMBER-ID, whose value is the member's
// address and kinds (JSON), attached to its lease.
const EtcdKeyPrefix = "/imsync"

// etcdDialTimeout bounds the check that etcd answers, before anything
// starts, and every call to etcd that has no deadline of its own: the
// provider's calls have none, and etcd's client waits without end for a
// connection, so an unreachable etcd would hang start and shutdown.
const etcdDialTimeout = 5 * time.Second

// EtcdEndpoints parses a comma-separated list of etcd client endpoints
// (HOST:PORT each).
func EtcdEndpoints(list string) ([]string, error) {
	var out []string
	for _, e := range strings.Split(list, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if scheme, rest, ok := strings.Cut(e, "://"); ok {
			return nil, fmt.Errorf("etcd endpoint %q: want HOST:PORT without a scheme (%s, not %s://)", e, rest, scheme)
		}
		host, p, err := net.SplitHostPort(e)
		if err != nil {
			return nil, fmt.Errorf("etcd endpoint %q: %v (want HOST:PORT)", e, err)
		}
		if port, err := strconv.Atoi(p); err != nil || port < 1 || port > 65535 || host == "" {
			return nil, fmt.Errorf("etcd endpoint %q: want HOST:PORT with a port of 1..65535", e)
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no etcd endpoint in %q (want HOST:PORT,...)", list)
	}
	return out, nil
}

// EtcdMembers is the membership provider of a cluster whose members
// register in etcd (endpoints: its client addresses, HOST:PORT): members
// join and leave without the others being told or restarted. It is
// protoactor-go's etcd provider with a lease of EtcdLeaseTTL, and it
// checks that etcd answers before returning (nothing has started yet
// when it fails).
//
// Around the provider it mends what would break the cluster's
// guarantees (in etcdView, and waitForPredecessor for the last):
//   - the provider lists and watches the key prefix "/imsync/NAME", which
//     also matches the cluster "NAME2": it lists "/imsync/NAME/" instead;
//   - it watches from "now" after listing the members, so a member that
//     came or went in between was never seen (a dead one stayed for good):
//     the watch starts right after the listed revision, and resumes after
//     the last event it delivered;
//   - when etcd compacted past that revision, the provider would miss the
//     changes for ever: the view lists the members again and delivers the
//     difference as events;
//   - its leader election (unused here) races with its keep-alive on a
//     map, fatally: its second and later listings come back empty, so
//     it elects nothing (see Get);
//   - a member restarted at the same address registers under a new id
//     while its previous registration lives until its lease expires: the
//     new member waits for the registrations at its own address to expire
//     first, so the others do not keep a dead member (nor, when its lease
//     expires, drop the connections to the address the new member now
//     has); one still there after etcdSameAddressWait is a live member
//     given the same address, and the new member refuses to start.
func EtcdMembers(endpoints []string) (cluster.ClusterProvider, error) {
	return EtcdMembersConfig(EtcdConfig{Endpoints: endpoints})
}

// EtcdConfig says how to reach etcd: its client endpoints (HOST:PORT),
// and for an etcd that requires them, TLS and a user.
type EtcdConfig struct {
	Endpoints []string
	// TLS, when set, is the configuration of every connection to etcd:
	// RootCAs verifies etcd's certificate (nil: the system's roots),
	// Certificates holds the client certificate when etcd requires one.
	// Nil: plaintext.
	TLS *tls.Config
	// Username and Password authenticate to etcd when its auth is
	// enabled (both or neither).
	Username, Password string
}

// EtcdMembersConfig is EtcdMembers for an etcd reached as cfg says. When
// etcd refuses the connection (a certificate it does not trust or that
// this side does not, TLS on one side only, a wrong password), the error
// names the cause.
func EtcdMembersConfig(cfg EtcdConfig) (cluster.ClusterProvider, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoint")
	}
	if (cfg.Username == "") != (cfg.Password == "") {
		return nil, errors.New("etcd: a user needs a password (and a password a user)")
	}
	endpoints := strings.Join(cfg.Endpoints, ",")
	ccfg := clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: etcdDialTimeout,
		TLS:         cfg.TLS,
		Username:    cfg.Username,
		Password:    cfg.Password,
		Logger:      zap.NewNop(), // the client's own logs are JSON on stderr; failures surface here or in the provider's logs
	}
	client, err := clientv3.New(ccfg)
	if err != nil { // with a user, the client authenticates before it returns
		return nil, etcdRefused(cfg, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), etcdDialTimeout)
	defer cancel()
	if _, err := client.Get(ctx, EtcdKeyPrefix+"/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
		client.Close()
		return nil, etcdRefused(cfg, err)
	}
	view := &etcdView{kv: client.KV, watcher: client.Watcher, newChecker: func() (clientv3.KV, io.Closer, error) {
		c, err := clientv3.New(ccfg)
		if err != nil {
			return nil, nil, err
		}
		return c.KV, c, nil
	}}
	client.KV, client.Watcher = view, view
	client.Lease = boundedLease{client.Lease}
	provider, err := etcd.NewWithConfig(EtcdKeyPrefix, clientv3.Config{},
		etcd.WithEtcdClient(client), etcd.WithKeepAliveTTL(EtcdLeaseTTL))
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("etcd %s: %v", endpoints, err)
	}
	return &etcdMembers{Provider: provider, client: client, view: view}, nil
}

type etcdMembers struct {
	*etcd.Provider
	client *clientv3.Client
	view   *etcdView
}

func (m *etcdMembers) StartMember(c *cluster.Cluster) error {
	m.view.start(c.Config.Name, c.ActorSystem.ID, c.Logger())
	err := m.startMember(c)
	if err != nil { // the member never started: nothing else closes the client
		m.view.stop()
		m.client.Close()
	}
	return err
}

func (m *etcdMembers) startMember(c *cluster.Cluster) error {
	host, port, err := c.ActorSystem.GetHostPort()
	if err != nil {
		return err
	}
	if err := m.waitForPredecessor(c.Config.Name, c.ActorSystem.ID, host, port); err != nil {
		return err
	}
	return m.Provider.StartMember(c)
}

// Lost is closed when this member's registration expired: the others
// dropped it for good, and only a restart brings the node back.
func (m *etcdMembers) Lost() <-chan struct{} { return m.view.lostChan() }

func (m *etcdMembers) Shutdown(graceful bool) error {
	m.view.leave() // the provider deletes this member's key: not an expiry
	err := m.Provider.Shutdown(graceful)
	// When its deletion failed (etcd unreachable) the provider returns
	// before it stops watching: the view ends the watch itself.
	m.view.stop()
	m.client.Close()
	return err
}

// etcdSameAddressWait is how long a new member waits for a registration
// at its own address to go: a dead predecessor's within its lease's TTL
// and etcd's expiry check; two lease TTLs and a second leave it slack.
const etcdSameAddressWait = 2*EtcdLeaseTTL + time.Second

// waitForPredecessor waits until no other member is registered at this
// member's address. Such a registration is a predecessor that died without
// leaving (a restart after SIGKILL), whose lease expires within
// EtcdLeaseTTL, or a live member elsewhere given the same address: one
// that is still there after etcdSameAddressWait is refused, rather than
// deleted (two such nodes would remove each other's registrations and
// restart each other for ever).
func (m *etcdMembers) waitForPredecessor(name, id, host string, port int) error {
	deadline := time.Now().Add(etcdSameAddressWait)
	for {
		other, err := m.registeredAt(name, id, host, port)
		if err != nil {
			return err
		}
		if other == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd: another live member is registered at %s (%s, still there after %v): "+
				"each node needs its own --advertise", net.JoinHostPort(host, strconv.Itoa(port)), other, etcdSameAddressWait)
		}
		time.Sleep(200 * time.Millisecond) // poll: the lease expires on etcd's side
	}
}

// registeredAt returns the key of another member of cluster name
// registered at host:port, or "".
func (m *etcdMembers) registeredAt(name, id, host string, port int) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), etcdDialTimeout)
	defer cancel()
	resp, err := m.view.kv.Get(ctx, etcdClusterKey(name)+"/", clientv3.WithPrefix())
	if err != nil {
		return "", fmt.Errorf("etcd: listing the members of %s: %v", name, err)
	}
	for _, kv := range resp.Kvs {
		var n etcd.Node
		if json.Unmarshal(kv.Value, &n) != nil || n.ID == name+"@"+id {
			continue
		}
		if h, p := n.GetAddress(); h == host && p == port {
			return string(kv.Key), nil
		}
	}
	return "", nil
}

// MembershipLost returns a channel closed when the member provider p says
// the other members dropped this one for good (the etcd provider's
// registration expired), or nil when p cannot lose its membership so.
func MembershipLost(p cluster.ClusterProvider) <-chan struct{} {
	if l, ok := p.(interface{ Lost() <-chan struct{} }); ok {
		return l.Lost()
	}
	return nil
}

func etcdClusterKey(name string) string { return EtcdKeyPrefix + "/" + name }

// etcdView stands in for the etcd client's KV and Watcher under the
// provider: the provider's listing and watch of the cluster's members go
// through it (see EtcdMembers); every other call passes through.
type etcdView struct {
	kv      clientv3.KV
	watcher clientv3.Watcher
	// checker lists the members every etcdRecheck (v.kv until it fails
	// etcdCheckerFailures times in a row; then a client of its own, made
	// again by newChecker after as many failures). An etcd client can stay
	// stuck on a login token etcd forgot in a restart: the others dropped
	// this member meanwhile, which only a fresh login can show it.
	newChecker func() (clientv3.KV, io.Closer, error)
	checker    clientv3.KV
	checkerC   io.Closer // the checker's own client, if any
	failures   int

	stopOnce sync.Once
	done     chan struct{} // closed by stop: the watch ends

	mu      sync.Mutex
	key     string // the provider's cluster key, "/imsync/NAME"
	self    string // this member's key
	leaving bool   // this member deregisters
	log     *slog.Logger
	listed  bool
	next    int64           // the first revision the provider has not seen
	members map[string]bool // the keys the provider has seen, as of next-1
	created int64           // this member's key's CreateRevision when first seen (0: not yet)
	lost    chan struct{}   // closed when this member's registration expired
}

var _ clientv3.KV = (*etcdView)(nil)
var _ clientv3.Watcher = (*etcdView)(nil)

func (v *etcdView) start(name, id string, log *slog.Logger) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.key, v.log = etcdClusterKey(name), log
	v.self = v.key + "/" + name + "@" + id
}

// stop ends the view's watch of the members, if any.
func (v *etcdView) stop() {
	v.stopOnce.Do(func() { close(v.stopped()) })
}

func (v *etcdView) stopped() chan struct{} {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.done == nil {
		v.done = make(chan struct{})
	}
	return v.done
}

// bounded gives a call without a deadline one of etcdDialTimeout.
func bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, etcdDialTimeout)
}

// boundedLease bounds the provider's lease grants (see bounded); the
// keep-alive stream passes through.
type boundedLease struct{ clientv3.Lease }

func (l boundedLease) Grant(ctx context.Context, ttl int64) (*clientv3.LeaseGrantResponse, error) {
	ctx, cancel := bounded(ctx)
	defer cancel()
	return l.Lease.Grant(ctx, ttl)
}

func (v *etcdView) leave() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.leaving = true
}

func (v *etcdView) isMembers(key string, opts []clientv3.OpOption) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.key != "" && key == v.key && clientv3.IsOptsWithPrefix(opts)
}

// Get lists the members under the cluster's own prefix. The first listing
// is the one the provider starts from: the watch begins after it.
//
// The provider lists them again only to elect a leader among the members
// (for its singletons, which imsync does not use), at its start and after
// every change, from whichever goroutine noticed; that election reads
// this member's metadata map while the keep-alive goroutine writes it
// (a new lease): a fatal concurrent map access that killed nodes at start.
// Those listings come back empty, which the election takes for "no
// leader" without reading anything.
func (v *etcdView) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	ctx, cancel := bounded(ctx)
	defer cancel()
	if !v.isMembers(key, opts) {
		return v.kv.Get(ctx, key, opts...)
	}
	v.mu.Lock()
	listed := v.listed
	v.mu.Unlock()
	if listed {
		return &clientv3.GetResponse{}, nil
	}
	resp, err := v.kv.Get(ctx, key+"/", opts...)
	if err != nil {
		return resp, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.listed = true
	v.next = resp.Header.Revision + 1
	v.members = map[string]bool{}
	for _, kv := range resp.Kvs {
		v.members[string(kv.Key)] = true
		v.noteSelf(kv)
	}
	return resp, nil
}

func (v *etcdView) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	ctx, cancel := bounded(ctx)
	defer cancel()
	return v.kv.Put(ctx, key, val, opts...)
}

func (v *etcdView) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	ctx, cancel := bounded(ctx)
	defer cancel()
	return v.kv.Delete(ctx, key, opts...)
}

func (v *etcdView) Compact(ctx context.Context, rev int64, opts ...clientv3.CompactOption) (*clientv3.CompactResponse, error) {
	ctx, cancel := bounded(ctx)
	defer cancel()
	return v.kv.Compact(ctx, rev, opts...)
}

func (v *etcdView) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	ctx, cancel := bounded(ctx)
	defer cancel()
	return v.kv.Do(ctx, op)
}

func (v *etcdView) Txn(ctx context.Context) clientv3.Txn { return v.kv.Txn(ctx) }

func (v *etcdView) RequestProgress(ctx context.Context) error { return v.watcher.RequestProgress(ctx) }

func (v *etcdView) Close() error { return v.watcher.Close() }

// Watch follows the members from the first revision the provider has not
// seen. Its channel carries only changes: no empty notifications, no
// compaction errors (the view lists the members again instead).
func (v *etcdView) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	if !v.isMembers(key, opts) {
		return v.watcher.Watch(ctx, key, opts...)
	}
	out := make(chan clientv3.WatchResponse)
	ctx, cancel := context.WithCancel(ctx)
	done := v.stopped()
	go func() {
		defer cancel()
		select {
		case <-done:
		case <-ctx.Done():
		}
	}()
	go v.follow(ctx, out)
	return out
}

func (v *etcdView) follow(ctx context.Context, out chan<- clientv3.WatchResponse) {
	defer close(out)
	defer v.closeChecker()
	for ctx.Err() == nil {
		v.mu.Lock()
		prefix, next := v.key+"/", v.next
		v.mu.Unlock()
		opts := []clientv3.OpOption{clientv3.WithPrefix()}
		if next > 0 {
			opts = append(opts, clientv3.WithRev(next))
		}
		wctx, cancel := context.WithCancel(ctx)
		compacted, relisted := false, false
		watch := v.watcher.Watch(clientv3.WithRequireLeader(wctx), prefix, opts...)
		recheck := time.NewTicker(etcdRecheck)
	watching:
		for {
			var resp clientv3.WatchResponse
			select {
			case r, ok := <-watch:
				if !ok {
					break watching
				}
				resp = r
			case <-recheck.C:
				// A watch can stall without an error (after an etcd restart
				// its stream may keep presenting a login token etcd forgot):
				// list the members with a plain call, which logs in again.
				if r, ok := v.recheck(ctx); ok {
					resp, relisted = r, true
					break
				}
				continue
			case <-ctx.Done():
				break watching
			}
			if resp.CompactRevision != 0 {
				compacted = true
				break
			}
			if err := resp.Err(); err != nil {
				v.logger().Warn("etcd: watching the members failed; watching again", slog.Any("error", err))
				break
			}
			if len(resp.Events) == 0 {
				continue
			}
			if !relisted {
				v.seen(resp.Events)
			}
			select {
			case out <- resp:
			case <-ctx.Done():
				recheck.Stop()
				cancel()
				return
			}
			if relisted {
				break // the watch was behind: watch again from the listing
			}
		}
		recheck.Stop()
		cancel()
		if relisted {
			continue
		}
		if compacted {
			if resp, ok := v.relist(ctx, false); ok {
				select {
				case out <- resp:
				case <-ctx.Done():
					return
				}
			}
		}
		if ctx.Err() == nil {
			select {
			case <-time.After(time.Second): // etcd unreachable, or no leader: try again
			case <-ctx.Done():
			}
		}
	}
}

// etcdRecheck: how often a member lists the members with a plain call
// besides its watch (a stalled watch is noticed within this).
const etcdRecheck = 2 * time.Second

// loseOnce closes lost (v.mu held).
func (v *etcdView) loseOnce() {
	if v.lost == nil {
		v.lost = make(chan struct{})
	}
	select {
	case <-v.lost:
	default:
		close(v.lost)
	}
}

func isClosedChan(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// lostChan is closed when this member's registration expired.
func (v *etcdView) lostChan() <-chan struct{} {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.lost == nil {
		v.lost = make(chan struct{})
	}
	return v.lost
}

func (v *etcdView) logger() *slog.Logger {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return v.log
}

// noteSelf records the CreateRevision of this member's key when first
// seen (v.mu held): a later registration under a new lease has a newer one.
func (v *etcdView) noteSelf(kv *mvccpb.KeyValue) {
	if string(kv.Key) == v.self && v.created == 0 {
		v.created = kv.CreateRevision
	}
}

// expired closes lost unless this member deregisters (v.mu held).
func (v *etcdView) expired() {
	if v.leaving || v.lost != nil && isClosedChan(v.lost) {
		return
	}
	if v.log != nil {
		v.log.Error("etcd: this member's registration expired (no keep-alive within the lease TTL): " +
			"the other members dropped it and will not take it back; restart this node")
	}
	v.loseOnce()
}

// seen records what the provider is about to learn.
func (v *etcdView) seen(evs []*clientv3.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, ev := range evs {
		key := string(ev.Kv.Key)
		switch ev.Type {
		case clientv3.EventTypePut:
			v.members[key] = true
			v.noteSelf(ev.Kv)
		case clientv3.EventTypeDelete:
			delete(v.members, key)
			if key == v.self {
				v.expired()
			}
		}
		if ev.Kv.ModRevision >= v.next {
			v.next = ev.Kv.ModRevision + 1
		}
	}
}

// etcdCheckerFailures: failed listings in a row after which the checker
// gets a fresh client (a fresh login).
const etcdCheckerFailures = 3

// recheck lists the members with the checker (see etcdView.checker).
func (v *etcdView) recheck(ctx context.Context) (clientv3.WatchResponse, bool) {
	kv := v.checker
	if kv == nil {
		kv = v.kv
	}
	resp, ok, err := v.relistWith(ctx, kv, true)
	if err == nil {
		v.failures = 0
		return resp, ok
	}
	if v.failures++; v.failures >= etcdCheckerFailures && v.newChecker != nil {
		v.failures = 0
		fresh, closer, err := v.newChecker()
		if err != nil {
			v.logger().Warn("etcd: a fresh client for listing the members failed", slog.Any("error", err))
			return clientv3.WatchResponse{}, false
		}
		if v.checkerC != nil {
			v.checkerC.Close()
		}
		v.checker, v.checkerC = fresh, closer
		v.logger().Info("etcd: listing the members with a fresh client (the previous one kept failing)")
	}
	return clientv3.WatchResponse{}, false
}

// closeChecker closes the checker's own client, if it has one.
func (v *etcdView) closeChecker() {
	if v.checkerC != nil {
		v.checkerC.Close()
	}
}

// relist reads the members again after a compaction and returns the
// difference from what the provider knows, as events (every member's
// registration again, and the deletions); with onlyNew, only the members
// it does not know and the deletions.
func (v *etcdView) relist(ctx context.Context, onlyNew bool) (clientv3.WatchResponse, bool) {
	resp, ok, _ := v.relistWith(ctx, v.kv, onlyNew)
	return resp, ok
}

func (v *etcdView) relistWith(ctx context.Context, kv clientv3.KV, onlyNew bool) (clientv3.WatchResponse, bool, error) {
	v.mu.Lock()
	prefix := v.key + "/"
	v.mu.Unlock()
	ctx, cancel := bounded(ctx)
	defer cancel()
	resp, err := kv.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		v.logger().Warn("etcd: listing the members again failed", slog.Any("error", err))
		return clientv3.WatchResponse{}, false, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	now := map[string]bool{}
	var evs []*clientv3.Event
	selfExpired := v.created != 0 // unless its first registration is still there
	for _, kv := range resp.Kvs {
		now[string(kv.Key)] = true
		v.noteSelf(kv) // (the first time, if the watch never showed it)
		if !onlyNew || !v.members[string(kv.Key)] {
			evs = append(evs, &clientv3.Event{Type: clientv3.EventTypePut, Kv: kv})
		}
		if string(kv.Key) == v.self && kv.CreateRevision == v.created {
			selfExpired = false
		}
	}
	// The events in between are gone: this member's key missing, or
	// created again (the provider's keep-alive registers anew under a
	// new lease), means its registration expired and the others dropped it.
	if selfExpired {
		v.expired()
	}
	for key := range v.members {
		if !now[key] {
			evs = append(evs, &clientv3.Event{Type: clientv3.EventTypeDelete,
				Kv: &mvccpb.KeyValue{Key: []byte(key), ModRevision: resp.Header.Revision}})
		}
	}
	if onlyNew && len(evs) == 0 {
		return clientv3.WatchResponse{}, false, nil // nothing new: the watch goes on from where it is
	}
	v.members, v.next = now, resp.Header.Revision+1
	if len(evs) == 0 {
		return clientv3.WatchResponse{}, false, nil
	}
	return clientv3.WatchResponse{Header: *resp.Header, Events: evs}, true, nil
}
