package http1

// BodyDone reports that the current body was handed out whole and ended
// without trailers: the next ReadData returns io.EOF without reading. It is
// true after the last piece of a Content-Length body, so that a caller can
// send that piece as the end of the message.
func (d *Decoder) BodyDone() bool {
	return d.mode == bodyDone && d.fail == nil && d.trailers.Len() == 0
}
