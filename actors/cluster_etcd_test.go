//go:build cluster

package actors_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/imsync/imsync/actors"
)

// TestClusterEtcdMembership: members register in etcd and find each other
// there; a member of a cluster whose name extends this one's is not one of
// them; a registration that a dead predecessor left at a member's address
// (its lease not expired yet) is gone once the member has started; a
// member that leaves is dropped at once.
func TestClusterEtcdMembership(t *testing.T) {
	endpoint := actors.StartTestEtcd(t)
	etcd, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	lease, err := etcd.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	const ghostKey = actors.EtcdKeyPrefix + "/chat/chat@ghost"
	ghost := fmt.Sprintf(`{"id":"chat@ghost","name":"chat@ghost","host":"127.0.0.1","address":"127.0.0.1","port":%d,"kinds":["conversation","user","device"],"alive":true}`, port)
	if _, err := etcd.Put(ctx, ghostKey, ghost, clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}

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
	if r, err := etcd.Get(ctx, ghostKey); err != nil || r.Count != 0 {
		t.Fatalf("the predecessor's registration at %d: %v (%v), want it removed", port, r.Kvs, err)
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
}
