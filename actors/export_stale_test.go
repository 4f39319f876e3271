package actors

// SendToConnection sends m to the attachment's connection actor, as a
// device grain holding its PID would.
func (a *Attachment) SendToConnection(m any) { a.svc.system.Root.Send(a.pid, m) }
