package actors

// Drop stops the attachment's connection actor without detaching it, as
// when its gateway goes away without a word.
func (a *Attachment) Drop() { a.svc.system.Root.Stop(a.pid) }
