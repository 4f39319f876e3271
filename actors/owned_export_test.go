package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"google.golang.org/protobuf/proto"
)

// ActivateHere activates a grain on this member whether or not it owns
// it, as a member with a late view of the membership can make it do, and
// returns its PID.
func (s *Service) ActivateHere(kind, identity string) *actor.PID {
	res, err := s.system.Root.RequestFuture(actor.NewPID(s.system.Address(), placementActorName),
		&cluster.ActivationRequest{ClusterIdentity: cluster.NewClusterIdentity(identity, kind)}, 5*time.Second).Result()
	if err != nil {
		return nil
	}
	return res.(*cluster.ActivationResponse).Pid
}

// AskPID sends a grain message straight to pid and waits for the answer.
func (s *Service) AskPID(pid *actor.PID, msg proto.Message) (any, error) {
	return s.system.Root.RequestFuture(pid, msg, 5*time.Second).Result()
}

// GetConversationMsg is a GetConversation request without members.
func GetConversationMsg(reader string) proto.Message {
	return &GetConversation{Reader: reader, NoMembers: true}
}
