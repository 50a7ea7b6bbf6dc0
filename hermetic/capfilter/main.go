// capfilter is an OCI runtime wrapper for hosts whose capability bounding set is
// shorter than the full set (some VMs and sandboxes drop CAP_SYS_RESOURCE).
//
// Docker asks runc for every capability when a container is privileged; runc then
// fails with "unable to apply caps: operation not permitted". Before handing over to
// the real runtime, capfilter removes from the container spec (create/run) or from
// the process spec (exec) each capability that the bounding set of this process
// lacks. It only ever removes: a capability that is not requested is never added.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// realRuntime is set at build time with -ldflags "-X main.realRuntime=/path/to/runc".
var realRuntime = "/usr/sbin/runc"

// capNumbers maps capability names to their bit numbers (linux/capability.h).
var capNumbers = map[string]uint{
	"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
	"CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
	"CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
	"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
	"CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
	"CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
	"CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
	"CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
	"CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
	"CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
	"CAP_CHECKPOINT_RESTORE": 40,
}

// globalFlagsWithValue are runc's global flags that take a separate value.
var globalFlagsWithValue = map[string]bool{
	"--root": true, "--log": true, "--log-format": true, "--criu": true, "--rootless": true,
}

func boundingSet() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		line := scanner.Text()
		if strings.HasPrefix(line, "CapBnd:") {
			return strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(line, "CapBnd:")), 16, 64)
		}
	}
	return 0, fmt.Errorf("no CapBnd line in /proc/self/status")
}

// filterCaps keeps the names whose bit is set in mask; unknown names are kept
// (runc rejects them itself with a clear message).
func filterCaps(names []interface{}, mask uint64) []interface{} {
	kept := make([]interface{}, 0, len(names))
	for _, n := range names {
		name, ok := n.(string)
		if !ok {
			kept = append(kept, n)
			continue
		}
		bit, known := capNumbers[strings.ToUpper(name)]
		if !known || mask&(1<<bit) != 0 {
			kept = append(kept, n)
		}
	}
	return kept
}

// filterProcess rewrites the capability lists of an OCI process object in place.
func filterProcess(process map[string]interface{}, mask uint64) {
	caps, ok := process["capabilities"].(map[string]interface{})
	if !ok {
		return
	}
	for set, v := range caps {
		if list, ok := v.([]interface{}); ok {
			caps[set] = filterCaps(list, mask)
		}
	}
}

func rewriteJSON(path string, spec bool, mask uint64) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var doc map[string]interface{}
	if err := json.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	process := doc
	if spec {
		p, ok := doc["process"].(map[string]interface{})
		if !ok {
			return nil
		}
		process = p
	}
	filterProcess(process, mask)
	out, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp := path + ".capfilter"
	if err := os.WriteFile(tmp, out, info.Mode().Perm()); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// subcommand returns the runc subcommand and the index of the first argument after it.
func subcommand(args []string) (string, int) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			return a, i + 1
		}
		if globalFlagsWithValue[a] {
			i++
		}
	}
	return "", len(args)
}

// flagValue finds "--name value", "--name=value" or "-s value" among args.
func flagValue(args []string, long, short string) (string, bool) {
	for i, a := range args {
		if a == "--" {
			break
		}
		if (a == long || a == short || a == "-"+long[2:]) && i+1 < len(args) {
			return args[i+1], true
		}
		if strings.HasPrefix(a, long+"=") {
			return strings.TrimPrefix(a, long+"="), true
		}
	}
	return "", false
}

func run() error {
	args := os.Args[1:]
	mask, err := boundingSet()
	if err != nil {
		return err
	}
	const full = (uint64(1) << 41) - 1
	if mask&full != full {
		cmd, rest := subcommand(args)
		switch cmd {
		case "create", "run":
			bundle, ok := flagValue(args[rest:], "--bundle", "-b")
			if !ok {
				bundle, _ = os.Getwd()
			}
			if err := rewriteJSON(filepath.Join(bundle, "config.json"), true, mask); err != nil {
				return err
			}
		case "exec":
			if process, ok := flagValue(args[rest:], "--process", "-p"); ok {
				if err := rewriteJSON(process, false, mask); err != nil {
					return err
				}
			}
		}
	}
	return syscall.Exec(realRuntime, append([]string{realRuntime}, args...), os.Environ())
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "capfilter: %v\n", err)
		os.Exit(1)
	}
}
