#!/usr/bin/env python3
"""Edit -> enforced time of `regate serve` (issue 17): from writing a policy file to the first
/validate answer judged by it, for a relative --policies, an absolute one, and a ConfigMap
volume's `..data` swap. Each run copies policies/, starts a server on ephemeral ports, adds the
configmap-team-label policy of docs/writing-policies.md and polls /validate every 10 ms.

    bench/edit_to_enforced.py [--bin target/release/regate] [--runs 3]
"""
import argparse, json, os, shutil, ssl, subprocess, sys, tempfile, time, urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = open(os.path.join(REPO, "docs/writing-policies.md")).read()
REGO = DOC.split("<!-- file: my-policies/configmap-team-label.rego -->\n```rego\n")[1].split("```")[0]
NAME = "configmap-team-label.rego"
REVIEW = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
    "uid": "u", "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
    "resource": {"group": "", "version": "v1", "resource": "configmaps"}, "name": "s",
    "namespace": "shop", "operation": "CREATE", "userInfo": {"username": "a"},
    "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s", "namespace": "shop"}}}}).encode()


def measure(binary, policies, change, label):
    server = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
         "--tls-cert", "c/tls.crt", "--tls-key", "c/tls.key", "--policies", policies,
         "--log-format", "json"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        for line in server.stderr:
            if "regate serving" in line:
                port = json.loads(line)["listen"].rsplit(":", 1)[1]
                break
        ctx = ssl.create_default_context(cafile="c/ca.crt")

        def denied():
            request = urllib.request.Request(f"https://localhost:{port}/validate", data=REVIEW,
                                             headers={"content-type": "application/json"})
            return json.load(urllib.request.urlopen(request, context=ctx))["response"]["allowed"] is False

        assert not denied(), "denied before the edit"
        started = time.monotonic()
        change()
        while not denied():
            if time.monotonic() - started > 10:
                print(f"{label}: not enforced after 10 s")
                return
            time.sleep(0.01)
        print(f"{label}: {1000 * (time.monotonic() - started):.0f} ms")
    finally:
        server.kill()
        server.wait()


def main():
    args = argparse.ArgumentParser()
    args.add_argument("--bin", default=os.path.join(REPO, "target/release/regate"))
    args.add_argument("--runs", type=int, default=3)
    a = args.parse_args()
    binary = os.path.abspath(a.bin)
    os.chdir(tempfile.mkdtemp())
    subprocess.run([binary, "certs", "generate", "--out", "c"], check=True, stdout=subprocess.DEVNULL)
    policies = os.path.join(REPO, "policies")
    for run in range(a.runs):
        for d in ("rel", "abs", "cm"):
            shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(policies, "rel")
        measure(binary, "rel", lambda: open(f"rel/{NAME}", "w").write(REGO), "relative path, new file")
        shutil.copytree(policies, "abs")
        measure(binary, os.path.abspath("abs"), lambda: open(f"abs/{NAME}", "w").write(REGO),
                "absolute path, new file")
        os.makedirs("cm")
        shutil.copytree(policies, "cm/..v1")
        os.symlink("..v1", "cm/..data")
        for f in os.listdir(policies):
            os.symlink("..data/" + f, "cm/" + f)

        def swap():
            # What the kubelet does: a new timestamped folder, then one rename of ..data.
            shutil.copytree(policies, "cm/..v2")
            open(f"cm/..v2/{NAME}", "w").write(REGO)
            os.symlink("..v2", "cm/..data_tmp")
            os.rename("cm/..data_tmp", "cm/..data")
            os.symlink(f"..data/{NAME}", f"cm/{NAME}")
            shutil.rmtree("cm/..v1")

        measure(binary, os.path.abspath("cm"), swap, "ConfigMap ..data swap")


if __name__ == "__main__":
    sys.exit(main())
