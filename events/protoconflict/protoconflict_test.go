package protoconflict_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/asynkron/protoactor-go/cluster"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "github.com/imsync/imsync/events/protoconflict"
)

var _ = esdb.NewClient
var _ = cluster.New

// TestBothLinked passes by starting at all: this binary links protoactor-go's
// cluster and the EventStoreDB client, whose gossip.proto files clash. The
// message types of both must still be registered.
func TestBothLinked(t *testing.T) {
	for _, name := range []protoreflect.FullName{
		"cluster.GossipRequest",                 // protoactor-go
		"event_store.client.gossip.ClusterInfo", // EventStoreDB client
	} {
		if _, err := protoregistry.GlobalTypes.FindMessageByName(name); err != nil {
			t.Errorf("%s not registered: %v", name, err)
		}
	}
}

// TestStartsWithoutWarning runs this binary again with the variable unset
// and checks that start-up prints no protobuf warning (nor panics).
func TestStartsWithoutWarning(t *testing.T) {
	if os.Getenv("PROTOCONFLICT_CHILD") != "" {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestStartsWithoutWarning$")
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOLANG_PROTOBUF_REGISTRATION_CONFLICT=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "PROTOCONFLICT_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), "WARNING") || strings.Contains(string(out), "panic") {
		t.Fatalf("child failed (%v):\n%s", err, out)
	}
}
