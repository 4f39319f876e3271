package events

// Stream names of the timeline model. Every conversation has a storage
// timeline and every user a sync timeline; projections filter $all by
// these prefixes.
const (
	ConversationPrefix = "conv-"
	InboxPrefix        = "inbox-"
)

// ConversationStream names the storage timeline of a conversation.
func ConversationStream(conversationID string) string { return ConversationPrefix + conversationID }

// InboxStream names the sync timeline of a user.
func InboxStream(userID string) string { return InboxPrefix + userID }

// SnapshotPrefix names the snapshot streams of grains: snap-<stream> holds
// snapshots of the state a grain derives from <stream>.
const SnapshotPrefix = "snap-"

// SnapshotStream names the snapshot stream of a grain's stream.
func SnapshotStream(stream string) string { return SnapshotPrefix + stream }
