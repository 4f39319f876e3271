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
