package netns

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("WEFT_REQUIRE_PRIVILEGED") == "1" {
		t.Fatal("needs root")
	}
	t.Skip("needs root")
}

func TestDoAndCookie(t *testing.T) {
	requireRoot(t)
	name := fmt.Sprintf("weft-nstest-%d", os.Getpid())
	exec.Command("ip", "netns", "delete", name).Run() // a killed earlier run with our PID
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", name).Run() })
	pod, err := os.Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer pod.Close()
	self, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()

	podID, _ := Identify(pod)
	selfID, _ := Identify(self)
	if podID == selfID {
		t.Fatalf("test netns has the host's ID %v", podID)
	}
	var inside ID
	if err := Do(pod, func() error {
		f, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			return err
		}
		defer f.Close()
		inside, err = Identify(f)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if inside != podID {
		t.Errorf("Do ran in %v, want the pod netns %v", inside, podID)
	}
	podCookie, err := Cookie(pod)
	if err != nil {
		t.Fatal(err)
	}
	selfCookie, err := Cookie(self)
	if err != nil {
		t.Fatal(err)
	}
	if podCookie == 0 || podCookie == selfCookie {
		t.Errorf("cookies: pod %d, host %d; want distinct, non-zero", podCookie, selfCookie)
	}
	again, _ := Cookie(pod)
	if again != podCookie {
		t.Errorf("cookie changed: %d then %d", podCookie, again)
	}
}
