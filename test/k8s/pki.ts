/**
 * The harness's PKI, made fresh per cluster with the `openssl` command (node:crypto makes keys but not X.509
 * certificates): one CA; the apiserver's serving certificate (127.0.0.1, localhost, kubernetes.default.svc…);
 * client certificates for the admin (system:masters), kube-controller-manager and the process kubelet; and
 * the service-account signing key pair.
 */
import { execFileSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface Pki {
  dir: string;
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  /** The process kubelet's serving certificate (127.0.0.1), for kubectl logs through the apiserver. */
  kubeletCert: string;
  kubeletKey: string;
  saKey: string;
  saPub: string;
  /** name → { cert, key } paths of client certificates */
  clients: Record<string, { cert: string; key: string }>;
}

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

function writeKey(path: string): void {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  writeFileSync(path, privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
}

export function signCertificate(dir: string, name: string, subject: string, ext: string): void {
  writeKey(join(dir, `${name}.key`));
  openssl(["req", "-new", "-key", `${name}.key`, "-subj", subject, "-out", `${name}.csr`], dir);
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl(
    [
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-days",
      "30",
      "-sha256",
      "-extfile",
      `${name}.ext`,
      "-out",
      `${name}.crt`,
    ],
    dir,
  );
}

/** Clients: name → subject, e.g. { admin: "/O=system:masters/CN=admin" }. */
/** `extraSans`: more subjectAltName entries of the API server's certificate (e.g. "IP:10.0.0.1"). */
export function createPki(dir: string, clients: Record<string, string>, extraSans: string[] = []): Pki {
  writeKey(join(dir, "ca.key"));
  openssl(
    [
      "req",
      "-x509",
      "-new",
      "-key",
      "ca.key",
      "-subj",
      "/CN=rft-k8s-harness-ca",
      "-days",
      "30",
      "-sha256",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
      "-out",
      "ca.crt",
    ],
    dir,
  );
  const sans = [
    "IP:127.0.0.1",
    "IP:0:0:0:0:0:0:0:1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
    ...extraSans,
  ].join(",");
  signCertificate(
    dir,
    "apiserver",
    "/CN=kube-apiserver",
    `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=${sans}\n`,
  );
  signCertificate(
    dir,
    "kubelet-serving",
    "/O=system:nodes/CN=system:node:rft-harness",
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
  );
  const out: Pki["clients"] = {};
  for (const [name, subject] of Object.entries(clients)) {
    signCertificate(
      dir,
      `client-${name}`,
      subject,
      "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
    );
    out[name] = { cert: join(dir, `client-${name}.crt`), key: join(dir, `client-${name}.key`) };
  }
  const sa = generateKeyPairSync("rsa", { modulusLength: 2048 });
  writeFileSync(join(dir, "sa.key"), sa.privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
  writeFileSync(join(dir, "sa.pub"), sa.publicKey.export({ type: "spki", format: "pem" }));
  return {
    dir,
    caCert: join(dir, "ca.crt"),
    caKey: join(dir, "ca.key"),
    serverCert: join(dir, "apiserver.crt"),
    serverKey: join(dir, "apiserver.key"),
    kubeletCert: join(dir, "kubelet-serving.crt"),
    kubeletKey: join(dir, "kubelet-serving.key"),
    saKey: join(dir, "sa.key"),
    saPub: join(dir, "sa.pub"),
    clients: out,
  };
}

/** A kubeconfig (YAML is JSON's superset, so JSON it is) with the certificates inlined. */
export function kubeconfigFor(server: string, caCert: string, client: { cert: string; key: string }, user: string) {
  const b64 = (p: string) => readFileSync(p).toString("base64");
  return JSON.stringify(
    {
      apiVersion: "v1",
      kind: "Config",
      clusters: [{ name: "rft-harness", cluster: { server, "certificate-authority-data": b64(caCert) } }],
      users: [
        { name: user, user: { "client-certificate-data": b64(client.cert), "client-key-data": b64(client.key) } },
      ],
      contexts: [{ name: "rft-harness", context: { cluster: "rft-harness", user, namespace: "default" } }],
      "current-context": "rft-harness",
      preferences: {},
    },
    null,
    2,
  );
}

/**
 * A serving certificate for 127.0.0.1 signed by the cluster's CA (in `pkiDir`, which holds ca.crt and ca.key):
 * `<name>.crt` and `<name>.key` there, e.g. for webhook servers the apiserver calls on loopback.
 */
export function signServing(pkiDir: string, name: string): { cert: string; key: string } {
  signCertificate(
    pkiDir,
    name,
    `/CN=${name}`,
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
  );
  return { cert: join(pkiDir, `${name}.crt`), key: join(pkiDir, `${name}.key`) };
}
