// cri_probe: drives containerd's CRI (v1alpha2, the API kubelet 1.20 speaks) the way a kubelet
// would, for scripts/container-probe.sh: one pod sandbox (pause image + CNI), then one container
// per case from a JSON file, each run as uid 1000 with a read-only root filesystem, no new
// privileges, the runtime's default seccomp profile and oom_score_adj -997 (a Guaranteed pod).
// Prints per case: exit code, the runtime's reason (Completed / Error / OOMKilled) and the log.
//
//	cri_probe SOCKET IMAGE CASES.json LOGDIR
//
// Built inside Debian's kubernetes source tree (vendored grpc and k8s.io/cri-api), GOPATH mode.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	rt "k8s.io/cri-api/pkg/apis/runtime/v1alpha2"
)

type mount struct {
	Host      string `json:"host"`
	Container string `json:"container"`
	ReadOnly  bool   `json:"readonly"`
}

type testCase struct {
	Name       string   `json:"name"`
	Args       []string `json:"args"`
	Env        []string `json:"env"`
	MemoryMiB  int64    `json:"memory_mib"`
	StopAfterS float64  `json:"stop_after_s"`
	Mounts     []mount  `json:"mounts"`
}

func must(err error, what string) {
	if err != nil {
		fmt.Printf("FAIL %s: %v\n", what, err)
		os.Exit(1)
	}
}

func main() {
	if len(os.Args) != 5 {
		fmt.Println("usage: cri_probe SOCKET IMAGE CASES.json LOGDIR")
		os.Exit(2)
	}
	sock, image, casesPath, logDir := os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	raw, err := os.ReadFile(casesPath)
	must(err, "read cases")
	var cases []testCase
	must(json.Unmarshal(raw, &cases), "parse cases")

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, "unix://"+sock, grpc.WithInsecure(), grpc.WithBlock())
	must(err, "dial")
	c := rt.NewRuntimeServiceClient(conn)
	v, err := c.Version(ctx, &rt.VersionRequest{})
	must(err, "Version")
	fmt.Printf("runtime: %s %s (CRI %s)\n", v.RuntimeName, v.RuntimeVersion, v.RuntimeApiVersion)

	pcfg := &rt.PodSandboxConfig{
		Metadata:     &rt.PodSandboxMetadata{Name: "probe", Namespace: "default", Uid: "openrl-probe", Attempt: 0},
		LogDirectory: logDir,
		Linux: &rt.LinuxPodSandboxConfig{CgroupParent: "/kubepods-openrl-probe",
			SecurityContext: &rt.LinuxSandboxSecurityContext{RunAsUser: &rt.Int64Value{Value: 65535}}},
	}
	sb, err := c.RunPodSandbox(ctx, &rt.RunPodSandboxRequest{Config: pcfg})
	must(err, "RunPodSandbox")
	defer func() {
		c.StopPodSandbox(context.Background(), &rt.StopPodSandboxRequest{PodSandboxId: sb.PodSandboxId})
		c.RemovePodSandbox(context.Background(), &rt.RemovePodSandboxRequest{PodSandboxId: sb.PodSandboxId})
	}()
	st, err := c.PodSandboxStatus(ctx, &rt.PodSandboxStatusRequest{PodSandboxId: sb.PodSandboxId})
	must(err, "PodSandboxStatus")
	fmt.Printf("sandbox: %s ip=%s\n", st.Status.State, st.Status.Network.GetIp())

	for _, k := range cases {
		res := &rt.LinuxContainerResources{OomScoreAdj: -997, MemoryLimitInBytes: k.MemoryMiB << 20}
		var mounts []*rt.Mount
		for _, m := range k.Mounts {
			mounts = append(mounts, &rt.Mount{HostPath: m.Host, ContainerPath: m.Container, Readonly: m.ReadOnly})
		}
		var envs []*rt.KeyValue
		for i := 0; i+1 < len(k.Env); i += 2 {
			envs = append(envs, &rt.KeyValue{Key: k.Env[i], Value: k.Env[i+1]})
		}
		ccfg := &rt.ContainerConfig{
			Metadata: &rt.ContainerMetadata{Name: k.Name}, Image: &rt.ImageSpec{Image: image},
			Command: k.Args, Envs: envs, LogPath: k.Name + ".log", Mounts: mounts,
			Linux: &rt.LinuxContainerConfig{Resources: res, SecurityContext: &rt.LinuxContainerSecurityContext{
				RunAsUser: &rt.Int64Value{Value: 1000}, RunAsGroup: &rt.Int64Value{Value: 1000},
				ReadonlyRootfs: true, NoNewPrivs: true,
				Seccomp: &rt.SecurityProfile{ProfileType: rt.SecurityProfile_RuntimeDefault}}},
		}
		cr, err := c.CreateContainer(ctx, &rt.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, Config: ccfg, SandboxConfig: pcfg})
		must(err, "CreateContainer "+k.Name)
		_, err = c.StartContainer(ctx, &rt.StartContainerRequest{ContainerId: cr.ContainerId})
		must(err, "StartContainer "+k.Name)
		if k.StopAfterS > 0 {
			time.Sleep(time.Duration(k.StopAfterS * float64(time.Second)))
			_, err = c.StopContainer(ctx, &rt.StopContainerRequest{ContainerId: cr.ContainerId, Timeout: 10})
			must(err, "StopContainer "+k.Name)
		}
		for {
			s, err := c.ContainerStatus(ctx, &rt.ContainerStatusRequest{ContainerId: cr.ContainerId})
			must(err, "ContainerStatus "+k.Name)
			if s.Status.State == rt.ContainerState_CONTAINER_EXITED {
				fmt.Printf("case %s: exit=%d reason=%s\n", k.Name, s.Status.ExitCode, s.Status.Reason)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		out, _ := os.ReadFile(logDir + "/" + k.Name + ".log")
		fmt.Printf("%s", indent(string(out)))
		c.RemoveContainer(ctx, &rt.RemoveContainerRequest{ContainerId: cr.ContainerId})
	}
}

// indent drops the CRI log prefix (timestamp, stream, tag) and indents each line.
func indent(log string) string {
	out := ""
	for _, line := range splitLines(log) {
		var ts, stream, tag, msg string
		if n, _ := fmt.Sscanf(line, "%s %s %s", &ts, &stream, &tag); n == 3 {
			msg = line[len(ts)+len(stream)+len(tag)+3:]
			out += "    " + stream + ": " + msg + "\n"
		} else if line != "" {
			out += "    " + line + "\n"
		}
	}
	return out
}

func splitLines(s string) []string {
	var lines []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			lines = append(lines, s[start:i])
			start = i + 1
		}
	}
	if start < len(s) {
		lines = append(lines, s[start:])
	}
	return lines
}
