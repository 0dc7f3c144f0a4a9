// What `rank1 serve` tells an operator at GET /metrics (Prometheus text, prom-client on a registry of its
// own): vLLM's metric names under a `rank1:` prefix, labelled with `model_name` as vLLM's are, so dashboards
// built for vLLM read it with the prefix changed. Gauges are read from the scheduler when scraped; counters
// and histograms are fed per request (./decoding.ts) and per HTTP response (./server.ts).
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { DecodeScheduler } from './scheduler.ts';

/** How a request ended: a response's finish reason, or the client gone (`abort`), or a failure (`error`). */
export type FinishedReason = 'stop' | 'length' | 'abort' | 'error';

// vLLM's buckets (vllm/v1/metrics/loggers.py), in seconds.
const TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560];
const ITL_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];
const REQUEST_BUCKETS = [0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680];

/** One request's clock: arrival, admission to the batch, each token. */
export interface RequestTimer {
  admitted: () => void;
  token: () => void;
  finished: (reason: FinishedReason, promptTokens: number, generatedTokens: number) => void;
}

export class ServeMetrics {
  readonly registry = new Registry();
  private readonly promptTokens: Counter;
  private readonly generationTokens: Counter;
  private readonly requestsFinished: Counter<'finished_reason'>;
  private readonly httpResponses: Counter<'status'>;
  private readonly timeToFirstToken: Histogram;
  private readonly interTokenLatency: Histogram;
  private readonly requestLatency: Histogram;
  private readonly queueTime: Histogram;

  constructor(modelName: string, scheduler: DecodeScheduler) {
    this.registry.setDefaultLabels({ model_name: modelName });
    const registers = [this.registry];
    const gauge = (name: string, help: string, read: () => number) => new Gauge({ name, help, registers, collect() { this.set(read()); } });
    gauge('rank1:num_requests_running', 'Requests in the decode batch now.', () => scheduler.active);
    gauge('rank1:num_requests_waiting', 'Requests queued for a batch slot now.', () => scheduler.queued);
    gauge('rank1:kv_cache_usage_bytes', 'KV-cache bytes held by the positions of the requests decoding now.', () => scheduler.kvCacheBytes);
    this.promptTokens = new Counter({ name: 'rank1:prompt_tokens_total', help: 'Prompt tokens prefilled.', registers });
    this.generationTokens = new Counter({ name: 'rank1:generation_tokens_total', help: 'Tokens generated.', registers });
    this.requestsFinished = new Counter({ name: 'rank1:request_success_total', help: 'Requests finished, by finish reason (abort: the client went away; error: failed).', labelNames: ['finished_reason'], registers });
    this.httpResponses = new Counter({ name: 'rank1:http_responses_total', help: 'HTTP responses, by status code.', labelNames: ['status'], registers });
    this.timeToFirstToken = new Histogram({ name: 'rank1:time_to_first_token_seconds', help: 'Time from arrival to the first generated token.', buckets: TTFT_BUCKETS, registers });
    this.interTokenLatency = new Histogram({ name: 'rank1:inter_token_latency_seconds', help: 'Time between consecutive generated tokens of a request.', buckets: ITL_BUCKETS, registers });
    this.requestLatency = new Histogram({ name: 'rank1:e2e_request_latency_seconds', help: 'Time from arrival to the last token.', buckets: REQUEST_BUCKETS, registers });
    this.queueTime = new Histogram({ name: 'rank1:request_queue_time_seconds', help: 'Time from arrival to admission into the decode batch.', buckets: REQUEST_BUCKETS, registers });
  }

  /** A clock for one request that arrived at `arrivedAt` (performance.now() milliseconds). */
  requestTimer(arrivedAt: number): RequestTimer {
    let lastToken: number | null = null;
    return {
      admitted: () => this.queueTime.observe((performance.now() - arrivedAt) / 1000),
      token: () => {
        const now = performance.now();
        if (lastToken === null) this.timeToFirstToken.observe((now - arrivedAt) / 1000);
        else this.interTokenLatency.observe((now - lastToken) / 1000);
        lastToken = now;
      },
      finished: (reason, promptTokens, generatedTokens) => {
        this.requestsFinished.inc({ finished_reason: reason });
        this.promptTokens.inc(promptTokens);
        this.generationTokens.inc(generatedTokens);
        this.requestLatency.observe((performance.now() - arrivedAt) / 1000);
      },
    };
  }

  response(status: number): void {
    this.httpResponses.inc({ status: String(status) });
  }

  /** The exposition text and its content type. */
  async exposition(): Promise<{ contentType: string; text: string }> {
    return { contentType: this.registry.contentType, text: await this.registry.metrics() };
  }
}
