package formatter

import (
	"fmt"
	"strconv"
	"time"
)

// timeFormat is a compiled strftime-style layout in Envoy's dialect
// (absl::FormatTime plus %f, %1f..%9f and %s), always rendered in UTC as
// Envoy does by default.
type timeFormat struct {
	ops []timeOp
}

type timeOp struct {
	verb byte   // 0 = literal
	text string // literal text
	n    int    // digits for %Nf / %E#S
}

// defaultStartTime is Envoy's %START_TIME% layout.
const defaultStartTime = "%Y-%m-%dT%H:%M:%E3SZ"

func compileTimeFormat(layout string) (*timeFormat, error) {
	if layout == "" {
		layout = defaultStartTime
	}
	tf := &timeFormat{}
	lit := func(s string) {
		if n := len(tf.ops); n > 0 && tf.ops[n-1].verb == 0 {
			tf.ops[n-1].text += s
			return
		}
		tf.ops = append(tf.ops, timeOp{text: s})
	}
	for i := 0; i < len(layout); i++ {
		c := layout[i]
		if c != '%' || i+1 >= len(layout) {
			lit(string(c))
			continue
		}
		i++
		v := layout[i]
		switch {
		case v >= '1' && v <= '9' && i+1 < len(layout) && layout[i+1] == 'f':
			tf.ops = append(tf.ops, timeOp{verb: 'f', n: int(v - '0')})
			i++
		case v == 'E' && i+2 < len(layout) && layout[i+2] == 'S':
			d := layout[i+1]
			switch {
			case d >= '0' && d <= '9':
				tf.ops = append(tf.ops, timeOp{verb: 'S', n: int(d - '0')})
			case d == '*':
				tf.ops = append(tf.ops, timeOp{verb: 'S', n: -1})
			default:
				return nil, fmt.Errorf("unsupported time specifier %%E%cS", d)
			}
			i += 2
		case v == 'f':
			tf.ops = append(tf.ops, timeOp{verb: 'f', n: 9})
		case v == '%':
			lit("%")
		case v == 'n':
			lit("\n")
		case v == 't':
			lit("\t")
		default:
			if !isTimeVerb(v) {
				return nil, fmt.Errorf("unsupported time specifier %%%c", v)
			}
			tf.ops = append(tf.ops, timeOp{verb: v})
		}
	}
	return tf, nil
}

func isTimeVerb(v byte) bool {
	switch v {
	case 'Y', 'y', 'C', 'm', 'd', 'e', 'H', 'I', 'M', 'S', 'p', 'j', 'a', 'A', 'b', 'h', 'B',
		'Z', 'z', 's', 'T', 'D', 'F', 'R', 'u', 'w', 'G':
		return true
	}
	return false
}

var (
	shortDays   = [...]string{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}
	shortMonths = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}
)

func appendPad(dst []byte, v, width int, pad byte) []byte {
	var buf [20]byte
	b := strconv.AppendInt(buf[:0], int64(v), 10)
	for i := len(b); i < width; i++ {
		dst = append(dst, pad)
	}
	return append(dst, b...)
}

func appendFrac(dst []byte, ns, digits int) []byte {
	var buf [9]byte
	for i := 8; i >= 0; i-- {
		buf[i] = byte('0' + ns%10)
		ns /= 10
	}
	return append(dst, buf[:digits]...)
}

func (tf *timeFormat) append(dst []byte, t time.Time) []byte {
	t = t.UTC()
	for _, op := range tf.ops {
		switch op.verb {
		case 0:
			dst = append(dst, op.text...)
		case 'Y', 'G':
			dst = appendPad(dst, t.Year(), 4, '0')
		case 'y':
			dst = appendPad(dst, t.Year()%100, 2, '0')
		case 'C':
			dst = appendPad(dst, t.Year()/100, 2, '0')
		case 'm':
			dst = appendPad(dst, int(t.Month()), 2, '0')
		case 'd':
			dst = appendPad(dst, t.Day(), 2, '0')
		case 'e':
			dst = appendPad(dst, t.Day(), 2, ' ')
		case 'H':
			dst = appendPad(dst, t.Hour(), 2, '0')
		case 'I':
			h := t.Hour() % 12
			if h == 0 {
				h = 12
			}
			dst = appendPad(dst, h, 2, '0')
		case 'p':
			if t.Hour() < 12 {
				dst = append(dst, "AM"...)
			} else {
				dst = append(dst, "PM"...)
			}
		case 'M':
			dst = appendPad(dst, t.Minute(), 2, '0')
		case 'S':
			dst = appendPad(dst, t.Second(), 2, '0')
			switch {
			case op.n > 0:
				dst = append(dst, '.')
				dst = appendFrac(dst, t.Nanosecond(), op.n)
			case op.n < 0 && t.Nanosecond() != 0:
				dst = append(dst, '.')
				b := appendFrac(nil, t.Nanosecond(), 9)
				for len(b) > 0 && b[len(b)-1] == '0' {
					b = b[:len(b)-1]
				}
				dst = append(dst, b...)
			}
		case 'f':
			dst = appendFrac(dst, t.Nanosecond(), op.n)
		case 'j':
			dst = appendPad(dst, t.YearDay(), 3, '0')
		case 'a':
			dst = append(dst, shortDays[t.Weekday()]...)
		case 'A':
			dst = append(dst, t.Weekday().String()...)
		case 'b', 'h':
			dst = append(dst, shortMonths[t.Month()-1]...)
		case 'B':
			dst = append(dst, t.Month().String()...)
		case 'Z':
			dst = append(dst, "UTC"...)
		case 'z':
			dst = append(dst, "+0000"...)
		case 's':
			dst = strconv.AppendInt(dst, t.Unix(), 10)
		case 'T':
			dst = appendPad(dst, t.Hour(), 2, '0')
			dst = append(dst, ':')
			dst = appendPad(dst, t.Minute(), 2, '0')
			dst = append(dst, ':')
			dst = appendPad(dst, t.Second(), 2, '0')
		case 'R':
			dst = appendPad(dst, t.Hour(), 2, '0')
			dst = append(dst, ':')
			dst = appendPad(dst, t.Minute(), 2, '0')
		case 'D':
			dst = appendPad(dst, int(t.Month()), 2, '0')
			dst = append(dst, '/')
			dst = appendPad(dst, t.Day(), 2, '0')
			dst = append(dst, '/')
			dst = appendPad(dst, t.Year()%100, 2, '0')
		case 'F':
			dst = appendPad(dst, t.Year(), 4, '0')
			dst = append(dst, '-')
			dst = appendPad(dst, int(t.Month()), 2, '0')
			dst = append(dst, '-')
			dst = appendPad(dst, t.Day(), 2, '0')
		case 'u':
			w := int(t.Weekday())
			if w == 0 {
				w = 7
			}
			dst = appendPad(dst, w, 1, '0')
		case 'w':
			dst = appendPad(dst, int(t.Weekday()), 1, '0')
		}
	}
	return dst
}
