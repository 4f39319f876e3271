//go:build cluster

package actors_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/actors/etcdtest"
)

// TestClusterEtcdMembership: members register in etcd and find each other
// there; a member of a cluster whose name extends this one's is not one of
// them; a member whose address still has the registration of a dead
// predecessor (its lease not expired yet, never kept alive again) starts
// once that expired, and nobody counts the dead one; a member that leaves
// is dropped at once.
func TestClusterEtcdMembership(t *testing.T) {
	endpoint := etcdtest.Start(t)
	etcd := etcdtest.Client(t, endpoint)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// A dead predecessor at a's address: its lease runs out, never renewed.
	port, _ := registerAtFreePort(t, ctx, etcd, "chat@ghost")
	store := newStore(t)
	member := func(name string, port int) *actors.Service {
		t.Helper()
		p, err := actors.EtcdMembers([]string{endpoint})
		if err != nil {
			t.Fatal(err)
		}
		return start(t, actors.Config{Store: store, ClusterName: name, Provider: p, Port: port})
	}
	a := member("chat", port)
	other := member("chatty", 0)
	b := member("chat", 0)
	eventually(t, "two members of chat, one of chatty", func() bool {
		return a.Members() == 2 && b.Members() == 2 && other.Members() == 1
	})
	if r, err := etcd.Get(ctx, actors.EtcdKeyPrefix+"/chat/chat@ghost"); err != nil || r.Count != 0 {
		t.Fatalf("the predecessor's registration at %d: %v (%v), want it expired", port, r.Kvs, err)
	}
	// Grains are reached on both members.
	for i := range 6 {
		if _, err := b.OpenDirect(ctx, "ann", fmt.Sprintf("u%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	b.Close()
	eventually(t, "a alone", func() bool { return a.Members() == 1 })
	if _, err := a.OpenDirect(ctx, "ann", "u0"); err != nil {
		t.Fatal(err)
	}
	// Alone, a leaves without handing over, and still deregisters: its
	// key goes at once, not when its lease expires.
	a.Close()
	if r, err := etcd.Get(ctx, actors.EtcdKeyPrefix+"/chat/", clientv3.WithPrefix()); err != nil || r.Count != 0 {
		t.Fatalf("registrations left after the last member closed: %v (%v)", r.Kvs, err)
	}
	other.Crash()
}

// syncBuffer is a log destination that several goroutines write.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestClusterEtcdRegistrationExpired: a member whose lease expires while
// it runs (here revoked, as etcd does when no keep-alive came within the
// TTL) is dropped by the others and says so in its log, naming the fix;
// when it registers again under the same id, the others do not take it
// back (protoactor-go keeps a member that left out for good), as
// docs/cluster.md says: it must be restarted.
func TestClusterEtcdRegistrationExpired(t *testing.T) {
	endpoint := etcdtest.Start(t)
	etcd := etcdtest.Client(t, endpoint)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store := newStore(t)
	member := func(log *slog.Logger) *actors.Service {
		t.Helper()
		p, err := actors.EtcdMembers([]string{endpoint})
		if err != nil {
			t.Fatal(err)
		}
		return start(t, actors.Config{Store: store, ClusterName: "chat", Provider: p, Logger: log})
	}
	var log syncBuffer
	a := member(slog.New(slog.NewTextHandler(&log, nil)))
	b := member(nil)
	eventually(t, "two members", func() bool { return a.Members() == 2 && b.Members() == 2 })

	keys, err := etcd.Get(ctx, actors.EtcdKeyPrefix+"/chat/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	_, aPort, _ := net.SplitHostPort(a.Address())
	var aKey string
	var aLease clientv3.LeaseID
	for _, kv := range keys.Kvs {
		if strings.Contains(string(kv.Value), `"port":`+aPort+`,`) {
			aKey, aLease = string(kv.Key), clientv3.LeaseID(kv.Lease)
		}
	}
	if aKey == "" {
		t.Fatalf("no registration of %s among %v", a.Address(), keys.Kvs)
	}
	if _, err := etcd.Revoke(ctx, aLease); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b alone", func() bool { return b.Members() == 1 })
	eventually(t, "a's error", func() bool { return strings.Contains(log.String(), "restart this node") })
	eventually(t, "a registered again", func() bool {
		r, err := etcd.Get(ctx, aKey)
		return err == nil && r.Count == 1
	})
	// b has seen a's new registration once it sees a member that
	// registered after it (etcd's watch is ordered).
	c := member(nil)
	eventually(t, "c known to b", func() bool { return c.Members() >= 2 && b.Members() >= 2 })
	if n := b.Members(); n != 2 {
		t.Fatalf("b counts %d members after a registered again and c joined, want 2 (b, c)", n)
	}
	for _, m := range []*actors.Service{a, b, c} {
		m.Crash() // no graceful handover to wait for
	}
}

// TestClusterEtcdCloseWhileEtcdDown: a member asked to stop while etcd is
// unreachable (SIGTERM during an outage) does not wait for etcd: its
// deregistration gives up and it stops.
func TestClusterEtcdCloseWhileEtcdDown(t *testing.T) {
	endpoint, stopEtcd := etcdtest.Run(t)
	store := newStore(t)
	member := func() *actors.Service {
		t.Helper()
		p, err := actors.EtcdMembers([]string{endpoint})
		if err != nil {
			t.Fatal(err)
		}
		return start(t, actors.Config{Store: store, ClusterName: "chat", Provider: p})
	}
	a, b := member(), member()
	eventually(t, "two members", func() bool { return a.Members() == 2 && b.Members() == 2 })
	stopEtcd()
	closed := make(chan struct{})
	go func() { a.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(60 * time.Second):
		t.Fatal("Close still blocked 60 s into an etcd outage")
	}
	b.Crash()
}

// TestClusterEtcdRefusesLiveMemberAtSameAddress: a node given the address
// of a live member (two machines with the same --advertise) does not
// remove that member's registration: it refuses to start, saying why.
func TestClusterEtcdRefusesLiveMemberAtSameAddress(t *testing.T) {
	endpoint := etcdtest.Start(t)
	etcd := etcdtest.Client(t, endpoint)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	port, lease := registerAtFreePort(t, ctx, etcd, "chat@elsewhere")
	if _, err := etcd.KeepAlive(ctx, lease); err != nil { // alive elsewhere
		t.Fatal(err)
	}
	p, err := actors.EtcdMembers([]string{endpoint})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := actors.Start(actors.Config{Store: newStore(t), ClusterName: "chat", Provider: p, Port: port})
	if err == nil {
		svc.Crash()
		t.Fatal("started at the address of a live member")
	}
	want := fmt.Sprintf("another live member is registered at 127.0.0.1:%d", port)
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--advertise") {
		t.Fatalf("error %q, want it to say %q and name --advertise", err, want)
	}
	if r, err := etcd.Get(ctx, actors.EtcdKeyPrefix+"/chat/chat@elsewhere"); err != nil || r.Count != 1 {
		t.Fatalf("the live member's registration: %v (%v), want it untouched", r.Kvs, err)
	}
}

// registerAtFreePort registers member id of cluster chat in etcd, as a node
// would, at a free loopback port under a lease of EtcdLeaseTTL (not kept
// alive), and returns the port and the lease.
func registerAtFreePort(t *testing.T, ctx context.Context, etcd *clientv3.Client, id string) (int, clientv3.LeaseID) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	lease, err := etcd.Grant(ctx, int64(actors.EtcdLeaseTTL/time.Second))
	if err != nil {
		t.Fatal(err)
	}
	v := fmt.Sprintf(`{"id":%[1]q,"name":%[1]q,"host":"127.0.0.1","address":"127.0.0.1","port":%[2]d,"kinds":["conversation","user","device"],"alive":true}`, id, port)
	if _, err := etcd.Put(ctx, actors.EtcdKeyPrefix+"/chat/"+id, v, clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	return port, lease.ID
}
