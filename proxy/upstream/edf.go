package upstream

// edf is Envoy's EdfScheduler: each entry has a virtual deadline, the entry
// with the earliest one is picked next (ties to the one queued first) and
// rescheduled at now + 1/weight. It is a binary heap; callers hold their own
// lock. The zero edf is empty and usable.
type edf[T any] struct {
	now   float64
	order uint64
	heap  []edfItem[T]
}

type edfItem[T any] struct {
	deadline float64
	order    uint64
	v        T
}

// add queues v with the given (positive) weight.
func (s *edf[T]) add(v T, weight float64) {
	s.heap = append(s.heap, edfItem[T]{deadline: s.now + 1/weight, order: s.order, v: v})
	s.order++
	for i := len(s.heap) - 1; i > 0; {
		p := (i - 1) / 2
		if !s.less(i, p) {
			break
		}
		s.heap[i], s.heap[p] = s.heap[p], s.heap[i]
		i = p
	}
}

// next is the entry to pick; the heap must not be empty.
func (s *edf[T]) next() T { return s.heap[0].v }

// reschedule moves the picked entry (next's) to now + 1/weight, now being
// its deadline.
func (s *edf[T]) reschedule(weight float64) {
	top := &s.heap[0]
	s.now = top.deadline
	top.deadline = s.now + 1/weight
	top.order = s.order
	s.order++
	for i, n := 0, len(s.heap); ; {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && s.less(r, l) {
			m = r
		}
		if !s.less(m, i) {
			return
		}
		s.heap[i], s.heap[m] = s.heap[m], s.heap[i]
		i = m
	}
}

func (s *edf[T]) less(i, j int) bool {
	a, b := &s.heap[i], &s.heap[j]
	if a.deadline != b.deadline {
		return a.deadline < b.deadline
	}
	return a.order < b.order
}
