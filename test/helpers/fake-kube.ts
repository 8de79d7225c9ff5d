// The stand-in Kubernetes API server lives in lab/kube-apiserver.ts (the lab's
// Kubernetes mode runs it); the tests' name for it: FakeKube(token), which keeps
// to what a test writes (no system namespaces) and records each request.
import { KubeApiServer } from '../../lab/kube-apiserver.js';

export { mergePatch, nodeObject } from '../../lab/kube-apiserver.js';

export class FakeKube extends KubeApiServer {
  constructor(token?: string) {
    super({ token });
  }
}
