package transport

// Watchers is how many servers follow r's revocations and disconnects.
func (r *Revocations) Watchers() int { return len(r.watching()) }
