package main

import (
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// TestBinaryLinksBothGossipProtos: the imsync binary links protoactor-go's
// cluster and the EventStoreDB client, whose gossip.proto files clash; it
// starts (this test runs at all) with nothing set by hand, and the message
// types of both are registered.
func TestBinaryLinksBothGossipProtos(t *testing.T) {
	for _, name := range []protoreflect.FullName{
		"cluster.GossipRequest",                 // protoactor-go
		"event_store.client.gossip.ClusterInfo", // EventStoreDB client
	} {
		if _, err := protoregistry.GlobalTypes.FindMessageByName(name); err != nil {
			t.Errorf("%s not registered: %v", name, err)
		}
	}
}
