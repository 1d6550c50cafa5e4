package proctree

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the times in /proc/PID/stat (USER_HZ, 100 on
// every Linux architecture Go supports).
const userHZ = 100

// statFields returns the fields of /proc/PID/stat after the command name:
// [0] is the state, [1] the parent's pid, [11] utime, [12] stime,
// [13] cutime, [14] cstime.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return nil, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	return f, nil
}

// childPIDs lists the children of pid, zombies included.
func childPIDs(pid int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	want := strconv.Itoa(pid)
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := statFields(n)
		if err != nil {
			continue // gone meanwhile
		}
		if f[1] == want {
			out = append(out, n)
		}
	}
	return out, nil
}

// treeCPU is the CPU seconds (user and system) of pid, of the children it
// has reaped, and of its children still running.
func treeCPU(pid int) (float64, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, fmt.Errorf("cpu time: %w", err)
	}
	ticks := 0
	for _, i := range []int{11, 12, 13, 14} {
		n, _ := strconv.Atoi(f[i])
		ticks += n
	}
	kids, err := childPIDs(pid)
	if err != nil {
		return 0, fmt.Errorf("cpu time: %w", err)
	}
	for _, k := range kids {
		if f, err := statFields(k); err == nil {
			u, _ := strconv.Atoi(f[11])
			s, _ := strconv.Atoi(f[12])
			ticks += u + s
		}
	}
	return float64(ticks) / userHZ, nil
}

// memKiB is the proportional set size of pid (Pss of smaps_rollup): its
// private pages, and its share of the pages it shares. Without
// smaps_rollup it falls back to VmRSS.
func memKiB(pid int) (int64, error) {
	base := "/proc/" + strconv.Itoa(pid) + "/"
	if v, err := procKiB(base+"smaps_rollup", "Pss:"); err == nil {
		return v, nil
	}
	return procKiB(base+"status", "VmRSS:")
}

func procKiB(path, key string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s line", path, key)
}

// treeMemKiB is the memory of pid and its children (socat forks one per
// connection), and how many children there are.
func treeMemKiB(pid int) (kib int64, children int, err error) {
	kib, err = memKiB(pid)
	if err != nil {
		return 0, 0, fmt.Errorf("memory: %w", err)
	}
	kids, err := childPIDs(pid)
	if err != nil {
		return 0, 0, fmt.Errorf("memory: %w", err)
	}
	for _, k := range kids {
		if v, err := memKiB(k); err == nil { // zombies have none
			kib += v
			children++
		}
	}
	return kib, children, nil
}

// waitNoChildren waits until pid has no children left, so that their CPU
// time has been reaped into its cutime and cstime.
func waitNoChildren(ctx context.Context, pid int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		kids, err := childPIDs(pid)
		if err != nil {
			return fmt.Errorf("children of %d: %w", pid, err)
		}
		if len(kids) == 0 {
			return nil
		}
		if err := sleep(ctx, pollInterval); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("%d children of %d still running after %v", len(kids), pid, timeout)
			}
			return err
		}
	}
}
