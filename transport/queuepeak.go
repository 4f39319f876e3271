package transport

import "sync/atomic"

// queuePeak keeps the most notifications, and bytes of them, that any one
// connection has had queued at once (a load on the usual path: no lock
// shared by connections).
type queuePeak struct {
	notes, bytes atomic.Int64
}

func (p *queuePeak) observe(notes, bytes int) {
	raise(&p.notes, int64(notes))
	raise(&p.bytes, int64(bytes))
}

func raise(v *atomic.Int64, x int64) {
	for {
		cur := v.Load()
		if x <= cur || v.CompareAndSwap(cur, x) {
			return
		}
	}
}

// QueuePeak returns the most notifications, and the most bytes of them,
// that any connection of this server has had queued for its device at
// once since the server started. Both stay bounded by Config.PushQueue: a
// device that does not keep up gets one "pull from here" instead of a
// longer queue.
func (s *Server) QueuePeak() (notifications, bytes int) {
	return int(s.peak.notes.Load()), int(s.peak.bytes.Load())
}
