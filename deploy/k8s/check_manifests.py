#!/usr/bin/env python3
"""Static check of deploy/k8s/ (no cluster is available to apply them to).

1. Schema: every manifest validates, strictly (unknown fields rejected),
   against the Kubernetes OpenAPI schemas of 1.27 (the first with GA gRPC
   probes) and of the newest version that kubernetes-validate (PyPI) bundles.
2. Consistency, with the binaries that the images ship:
   - every flag in the ConfigMap's *_ARGS and in any container command that
     runs a binary is one that binary accepts (its --helpfull), and the entry
     points' own flags are set nowhere else;
   - the serve address and metrics address match the container ports, the
     headless Service's ports and the probes; the gRPC probes ask the health
     service on the gRPC port, readiness for distill.v1.Teacher;
   - a max connection age is set; the drain deadline is shorter than the
     termination grace period;
   - the Service is headless and selects the teacher pods; the students'
     DISTILLERY_TEACHER names that Service and port;
   - the students Job is Indexed with parallelism, and its completions equal
     STUDENT_NUM_SHARDS;
   - every referenced ConfigMap, key and PersistentVolumeClaim exists; the
     kustomization lists every manifest.
Before that, it checks itself: broken copies of the manifests (a misspelt
flag, a wrong probe port, a Service that is not headless, ...) must each be
rejected for the expected reason.
Usage: check_manifests.py --teacher_server BIN --student_trainer BIN [DIR]
Exits 1 with the list of problems, 0 with a summary.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml
import kubernetes_validate

SCHEMA_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]
# Flags the entry points set themselves (deploy/bin/distillery-*).
ENTRY_POINT_FLAGS = {
    "distillery-teacher": {"data_dir", "checkpoint", "metrics_csv", "resume"},
    "distillery-student": {"teacher", "source", "num_shards", "shard_index", "data_dir",
                           "checkpoint", "metrics_csv", "resume"},
}

problems = []


def problem(message):
    problems.append(message)


def accepted_flags(binary):
    out = subprocess.run([binary, "--helpfull"], capture_output=True, text=True, check=False)
    flags = set(re.findall(r"^\s+--([A-Za-z0-9_]+) \(", out.stdout + out.stderr, re.M))
    if len(flags) < 10:
        sys.exit(f"check_manifests: could not read the flags of {binary}")
    return flags


def flag_values(args):
    """{name: value} of '--name=value' / '--name' words; non-flags are problems."""
    values = {}
    for word in args:
        m = re.fullmatch(r"--([A-Za-z0-9_]+)(?:=(.*))?", word)
        if not m:
            problem(f"not a --flag: {word!r}")
            continue
        values[m.group(1)] = m.group(2) if m.group(2) is not None else "true"
    return values


def check_flags(where, args, accepted, binary_name, reserved=()):
    values = flag_values(args)
    for name in values:
        if name not in accepted:
            problem(f"{where}: --{name} is not a flag of {binary_name}")
        if name in reserved:
            problem(f"{where}: --{name} is set by the entry point already")
    return values


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def run_checks(directory, teacher_flags, student_flags):
    """Checks the manifests in directory; returns (problems, summary)."""
    problems.clear()
    files = sorted(glob.glob(os.path.join(directory, "*.yaml")))
    docs = []
    for path in files:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    docs.append((os.path.basename(path), doc))
    by_kind = {}
    for name, doc in docs:
        by_kind.setdefault(doc["kind"], []).append((name, doc))

    # 1. Schemas.
    validated = 0
    for name, doc in docs:
        if doc["kind"] == "Kustomization":
            continue
        for version in SCHEMA_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                validated += 1
            except kubernetes_validate.ValidationError as e:
                problem(f"{name}: {doc['kind']}/{doc['metadata']['name']} against {version}: "
                        f"{e.message} at {'.'.join(map(str, e.path))}")

    # The kustomization lists every manifest.
    kustomizations = by_kind.get("Kustomization", [])
    if len(kustomizations) != 1:
        problem("expected one kustomization.yaml")
    else:
        listed = set(kustomizations[0][1].get("resources", []))
        for path in files:
            base = os.path.basename(path)
            if base != "kustomization.yaml" and base not in listed:
                problem(f"kustomization.yaml does not list {base}")
        for base in listed - {os.path.basename(p) for p in files}:
            problem(f"kustomization.yaml lists a missing file {base}")

    # 2. ConfigMap flags.
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for _, d in by_kind.get("ConfigMap", [])}
    claims = {d["metadata"]["name"] for _, d in by_kind.get("PersistentVolumeClaim", [])}
    config = config_maps.get("distillery-config")
    if config is None:
        problem("no ConfigMap distillery-config")
        return list(problems), ""
    train = check_flags("TEACHER_TRAIN_ARGS", config.get("TEACHER_TRAIN_ARGS", "").split(),
                        teacher_flags, "teacher_server", ENTRY_POINT_FLAGS["distillery-teacher"])
    serve = check_flags("TEACHER_SERVE_ARGS", config.get("TEACHER_SERVE_ARGS", "").split(),
                        teacher_flags, "teacher_server", ENTRY_POINT_FLAGS["distillery-teacher"])
    check_flags("STUDENT_ARGS", config.get("STUDENT_ARGS", "").split(), student_flags,
                "student_trainer", ENTRY_POINT_FLAGS["distillery-student"])
    for needed in ("threads",):
        if needed not in train or needed not in serve:
            problem(f"the teacher's train and serve flags must set --{needed}")
    grpc_port = port_of(serve.get("address", "0.0.0.0:50051"))
    metrics_port = port_of(serve.get("metrics_address", "0.0.0.0:9464"))
    if float(serve.get("max_connection_age_seconds", "0")) <= 0:
        problem("TEACHER_SERVE_ARGS sets no --max_connection_age_seconds")
    drain = float(serve.get("drain_seconds", "10"))

    # Containers: references, commands, ports, probes.
    workloads = by_kind.get("Deployment", []) + by_kind.get("Job", [])
    for name, doc in workloads:
        pod = doc["spec"]["template"]["spec"]
        where = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
        for volume in pod.get("volumes", []):
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim and claim not in claims:
                problem(f"{where}: no PersistentVolumeClaim {claim}")
        for container in pod.get("initContainers", []) + pod["containers"]:
            cwhere = f"{where} container {container['name']}"
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef", {}).get("name")
                if ref and ref not in config_maps:
                    problem(f"{cwhere}: no ConfigMap {ref}")
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("configMapKeyRef")
                if ref and ref["key"] not in config_maps.get(ref["name"], {}):
                    problem(f"{cwhere}: no key {ref['key']} in ConfigMap {ref['name']}")
            command = container.get("command", []) + container.get("args", [])
            for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
                exec_command = container.get(probe_name, {}).get("exec", {}).get("command")
                if exec_command:
                    check_binary_command(f"{cwhere} {probe_name}", exec_command, teacher_flags,
                                         student_flags)
            if command:
                check_binary_command(cwhere, command, teacher_flags, student_flags)
            if command[:1] == ["distillery-teacher"] and "--train-only" not in command:
                check_teacher_container(cwhere, pod, container, grpc_port, metrics_port, drain)
                check_teacher_memory(cwhere, container, serve)

    # The headless Service in front of the teachers.
    services = {d["metadata"]["name"]: d for _, d in by_kind.get("Service", [])}
    teacher_service = services.get("teacher")
    teacher_deployments = [d for _, d in by_kind.get("Deployment", [])
                           if any(c.get("command", [])[:1] == ["distillery-teacher"]
                                  for c in d["spec"]["template"]["spec"]["containers"])]
    if teacher_service is None or len(teacher_deployments) != 1:
        problem("expected a Service `teacher` and one teacher Deployment")
    else:
        spec = teacher_service["spec"]
        if spec.get("clusterIP") != "None":
            problem("Service teacher is not headless (clusterIP: None)")
        labels = teacher_deployments[0]["spec"]["template"]["metadata"]["labels"]
        if not spec.get("selector") or any(labels.get(k) != v for k, v in spec["selector"].items()):
            problem("Service teacher does not select the teacher pods")
        if teacher_deployments[0]["spec"]["selector"]["matchLabels"].items() - labels.items():
            problem("the teacher Deployment's selector does not match its pods")
        ports = {p["name"]: p for p in spec["ports"]}
        if ports.get("grpc", {}).get("port") != grpc_port:
            problem(f"Service teacher's grpc port is not {grpc_port}")
        if ports.get("metrics", {}).get("port") != metrics_port:
            problem(f"Service teacher's metrics port is not {metrics_port}")
        target = config.get("DISTILLERY_TEACHER", "")
        if target != f"dns:///teacher:{grpc_port}":
            problem(f"DISTILLERY_TEACHER {target!r} is not the headless Service dns:///teacher:{grpc_port}")

    # The students Job.
    jobs = [d for _, d in by_kind.get("Job", [])]
    if len(jobs) != 1:
        problem("expected one students Job")
    else:
        spec = jobs[0]["spec"]
        if spec.get("completionMode") != "Indexed":
            problem("the students Job is not Indexed (each index is a shard)")
        if spec.get("parallelism", 1) < 2:
            problem("the students Job has no parallelism")
        if str(spec.get("completions")) != str(config.get("STUDENT_NUM_SHARDS")):
            problem("the students Job's completions differ from STUDENT_NUM_SHARDS")

    summary = (f"{len(docs)} manifests in {len(files)} files; {validated} schema validations "
               f"(strict, Kubernetes {' and '.join(SCHEMA_VERSIONS)}); flags, ports, probes and "
               f"references consistent with the binaries")
    return list(problems), summary


# Broken copies of the manifests that the check must reject: (file, text,
# replacement, expected problem). Run before the real check, so that a check
# that has gone blind fails.
MUTATIONS = [
    ("configmap.yaml", "--distill_temperature=4", "--distill_temprature=4", "not a flag of"),
    ("configmap.yaml", "--max_connection_age_seconds=60", "", "max_connection_age"),
    ("configmap.yaml", 'STUDENT_NUM_SHARDS: "2"', 'STUDENT_NUM_SHARDS: "3"', "completions"),
    ("teacher.yaml", "service: distill.v1.Teacher", "service: distill.v1.Teacher\n              port: 50052",
     "readinessProbe asks port 50052"),
    ("teacher.yaml", "clusterIP: None", 'clusterIP: ""', "headless"),
    ("teacher.yaml", "name: distillery-config", "name: distillery-cfg", "no ConfigMap"),
    ("teacher.yaml", "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 5",
     "drain"),
    ("students.yaml", "completionMode: Indexed", "completionMode: NonIndexed", "Indexed"),
    ("students.yaml", "claimName: distillery-state", "claimName: state", "PersistentVolumeClaim"),
    ("students.yaml", "parallelism: 2", "parallelizm: 2", "against"),
    ("configmap.yaml", "--max_inflight_calls=64", "--max_inflight_calls=256", "memory limit"),
    ("teacher.yaml", "limits: {cpu: \"1\", memory: 1Gi}", "limits: {cpu: \"1\", memory: 512Mi}",
     "memory limit"),
]


def self_test(directory, teacher_flags, student_flags):
    failures = []
    for file, text, replacement, expected in MUTATIONS:
        with tempfile.TemporaryDirectory() as tmp:
            for path in glob.glob(os.path.join(directory, "*.yaml")):
                shutil.copy(path, tmp)
            target = os.path.join(tmp, file)
            with open(target) as f:
                content = f.read()
            if text not in content:
                failures.append(f"mutation of {file}: {text!r} is not in it")
                continue
            with open(target, "w") as f:
                f.write(content.replace(text, replacement, 1))
            found, _ = run_checks(tmp, teacher_flags, student_flags)
            if not any(expected in p for p in found):
                failures.append(f"{file} with {text!r} -> {replacement!r}: no problem "
                                f"mentioning {expected!r} (found {found})")
    return failures


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher_server", required=True)
    parser.add_argument("--student_trainer", required=True)
    parser.add_argument("dir", nargs="?", default=os.path.dirname(os.path.abspath(__file__)))
    options = parser.parse_args()
    teacher_flags = accepted_flags(options.teacher_server)
    student_flags = accepted_flags(options.student_trainer)

    failures = self_test(options.dir, teacher_flags, student_flags)
    if failures:
        print("check_manifests: FAIL: the check missed broken manifests:")
        for f in failures:
            print("  " + f)
        return 1
    found, summary = run_checks(options.dir, teacher_flags, student_flags)
    if found:
        print("check_manifests: FAIL")
        for p in found:
            print("  " + p)
        return 1
    print(f"check_manifests: {len(MUTATIONS)} broken copies rejected; {summary}")
    return 0


def check_binary_command(where, command, teacher_flags, student_flags):
    binary = os.path.basename(command[0])
    if binary in ENTRY_POINT_FLAGS:
        extra = [w for w in command[1:] if w != "--train-only" or binary != "distillery-teacher"]
        if extra:
            problem(f"{where}: {binary} takes no arguments but {extra}")
        return
    accepted = {"teacher_server": teacher_flags, "student_trainer": student_flags}.get(binary)
    if accepted is None:
        if binary not in ("prometheus",):
            problem(f"{where}: runs an unknown program {command[0]}")
        return
    subcommands = {"teacher_server": {"train", "serve", "probe"},
                   "student_trainer": {"baseline", "distill", "export"}}[binary]
    if len(command) < 2 or command[1] not in subcommands:
        problem(f"{where}: {binary} needs one of {sorted(subcommands)}")
        return
    check_flags(where, command[2:], accepted, binary)


def check_teacher_container(where, pod, container, grpc_port, metrics_port, drain):
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    if ports.get("grpc") != grpc_port:
        problem(f"{where}: containerPort grpc is not the serve port {grpc_port}")
    if ports.get("metrics") != metrics_port:
        problem(f"{where}: containerPort metrics is not the metrics port {metrics_port}")
    for probe_name, service in (("livenessProbe", None), ("readinessProbe", "distill.v1.Teacher")):
        probe = container.get(probe_name)
        if probe is None:
            problem(f"{where}: no {probe_name}")
            continue
        if "grpc" in probe:
            if probe["grpc"].get("port") != grpc_port:
                problem(f"{where}: {probe_name} asks port {probe['grpc'].get('port')}, not {grpc_port}")
            if service and probe["grpc"].get("service") != service:
                problem(f"{where}: {probe_name} does not ask for {service}")
        elif "exec" in probe:
            target = [w for w in probe["exec"]["command"] if w.startswith("--probe_target=")]
            if not target or port_of(target[0]) != grpc_port:
                problem(f"{where}: {probe_name}'s probe does not ask port {grpc_port}")
        else:
            problem(f"{where}: {probe_name} is neither a grpc nor an exec probe")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= drain:
        problem(f"{where}: terminationGracePeriodSeconds {grace} is not longer than the drain ({drain} s)")


# What a teacher holds besides its calls' messages: the network, its
# primitives and scratch, the transfer set (measured: ~100 MiB RSS for the
# 784-1200-1200-10 teacher, flat under every batch size; see bench/RESULTS.md).
TEACHER_BASE_MIB = 200


def memory_mib(quantity):
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024,
             "K": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    for suffix, factor in sorted(units.items(), key=lambda u: -len(u[0])):
        if str(quantity).endswith(suffix):
            return float(str(quantity)[:-len(suffix)]) * factor
    return float(quantity) / 2**20


def check_teacher_memory(where, container, serve):
    """The serving container's memory limit must cover its worst case: every
    call in flight holding a request and an answer of the largest message."""
    limit = container.get("resources", {}).get("limits", {}).get("memory")
    if limit is None:
        problem(f"{where}: no memory limit")
        return
    inflight = int(serve.get("max_inflight_calls", "256"))
    message_mib = int(serve.get("max_message_mb", "16"))
    worst = 2 * inflight * message_mib + TEACHER_BASE_MIB
    if memory_mib(limit) < worst:
        problem(f"{where}: memory limit {limit} is below the worst case of {worst} MiB "
                f"(2 x --max_inflight_calls={inflight} x --max_message_mb={message_mib} + "
                f"{TEACHER_BASE_MIB} MiB)")


if __name__ == "__main__":
    sys.exit(main())
