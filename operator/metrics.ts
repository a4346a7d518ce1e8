/** Prometheus metrics with controller-runtime's names plus rft_finetunejobs by state. */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { QueueMetrics } from "./workqueue.js";

export const CONTROLLER = "finetunejob";

export class OperatorMetrics {
  readonly registry = new Registry();
  readonly reconcileTotal = new Counter({
    name: "controller_runtime_reconcile_total",
    help: "Total number of reconciliations per controller",
    labelNames: ["controller", "result"],
    registers: [this.registry],
  });
  readonly reconcileErrors = new Counter({
    name: "controller_runtime_reconcile_errors_total",
    help: "Total number of reconciliation errors per controller",
    labelNames: ["controller"],
    registers: [this.registry],
  });
  readonly reconcileTime = new Histogram({
    name: "controller_runtime_reconcile_time_seconds",
    help: "Length of time per reconciliation per controller",
    labelNames: ["controller"],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly apiRequests = new Counter({
    name: "rft_operator_api_requests_total",
    help: "Requests the operator sent to the Kubernetes API server",
    registers: [this.registry],
  });
  readonly messagesDropped = new Counter({
    name: "rft_operator_messages_dropped_total",
    help: "NATS messages the operator dropped: malformed, out of bounds, or not matching the job (subject: progress)",
    labelNames: ["subject", "reason"],
    registers: [this.registry],
  });
  readonly jobs = new Gauge({
    name: "rft_finetunejobs",
    help: "FineTuneJobs by state",
    labelNames: ["state"],
    registers: [this.registry],
  });
  readonly leader = new Gauge({
    name: "leader_election_master_status",
    help: "1 when this replica leads",
    labelNames: ["name"],
    registers: [this.registry],
  });
  private readonly wq = {
    adds: new Counter({
      name: "workqueue_adds_total",
      help: "Total adds",
      labelNames: ["name"],
      registers: [this.registry],
    }),
    depth: new Gauge({
      name: "workqueue_depth",
      help: "Current depth",
      labelNames: ["name"],
      registers: [this.registry],
    }),
    queue: new Histogram({
      name: "workqueue_queue_duration_seconds",
      help: "Seconds an item stays in the queue before being processed",
      labelNames: ["name"],
      buckets: [0.001, 0.01, 0.1, 1, 10, 60],
      registers: [this.registry],
    }),
    work: new Histogram({
      name: "workqueue_work_duration_seconds",
      help: "Seconds processing an item takes",
      labelNames: ["name"],
      buckets: [0.001, 0.01, 0.1, 1, 10, 60],
      registers: [this.registry],
    }),
    retries: new Counter({
      name: "workqueue_retries_total",
      help: "Total retries",
      labelNames: ["name"],
      registers: [this.registry],
    }),
    unfinished: new Gauge({
      name: "workqueue_unfinished_work_seconds",
      help: "Items being processed (approximation: count of in-flight items)",
      labelNames: ["name"],
      registers: [this.registry],
    }),
  };

  queueMetrics(name = CONTROLLER): QueueMetrics {
    return {
      adds: () => this.wq.adds.inc({ name }),
      depth: (n) => this.wq.depth.set({ name }, n),
      queueDuration: (s) => this.wq.queue.observe({ name }, s),
      workDuration: (s) => this.wq.work.observe({ name }, s),
      retries: () => this.wq.retries.inc({ name }),
      unfinished: (n) => this.wq.unfinished.set({ name }, n),
    };
  }
}
