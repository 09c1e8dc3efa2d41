using System.Globalization;
using System.Text;

namespace Nabla.Serving;

/// <summary>
/// The Prometheus text exposition (format 0.0.4) at <c>GET /metrics</c>: Triton's inference families under a
/// <c>nabla_</c> prefix with <c>model</c> and <c>version</c> labels, read from the same counters as the statistics
/// extension, plus histograms of queue time, compute time, request time and batch size.
/// </summary>
public static class PrometheusMetrics
{
    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    static readonly (FailureReason Reason, string Label)[] Reasons =
        [(FailureReason.Rejected, "REJECTED"), (FailureReason.Canceled, "CANCELED"), (FailureReason.Backend, "BACKEND"), (FailureReason.Other, "OTHER")];

    /// <summary>The exposition text for every loaded version.</summary>
    public static string Render(IReadOnlyList<ModelVersion> versions)
    {
        var sb = new StringBuilder();
        void Family(string name, string type, string help, Action<ModelVersion, string> write)
        {
            sb.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
            sb.Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');
            foreach (var mv in versions) write(mv, Labels(mv));
        }
        void Line(string name, string labels, double value) =>
            sb.Append(name).Append('{').Append(labels).Append("} ").Append(Number(value)).Append('\n');

        Family("nabla_inference_request_success", "counter", "Successful inference requests (one per request, whatever its batch).",
            (mv, l) => Line("nabla_inference_request_success", l, mv.Stats.Success));
        Family("nabla_inference_request_failure", "counter", "Failed inference requests by reason (REJECTED: queue full or queue timeout; CANCELED; BACKEND; OTHER).",
            (mv, l) =>
            {
                foreach (var (r, label) in Reasons) Line("nabla_inference_request_failure", l + ",reason=\"" + label + "\"", mv.Stats.FailuresFor(r));
            });
        Family("nabla_inference_count", "counter", "Inferences performed (a batch of n counts n).",
            (mv, l) => Line("nabla_inference_count", l, mv.Stats.Inferences));
        Family("nabla_inference_exec_count", "counter", "Model executions (batches).",
            (mv, l) => Line("nabla_inference_exec_count", l, mv.Stats.Executions));
        Family("nabla_inference_pending_request_count", "gauge", "Requests queued by the dynamic batcher and not yet executing.",
            (mv, l) => Line("nabla_inference_pending_request_count", l, mv.Batcher?.Pending ?? 0));
        Family("nabla_inference_request_duration_us", "counter", "Cumulative end-to-end time of successful requests, microseconds.",
            (mv, l) => Line("nabla_inference_request_duration_us", l, Interlocked.Read(ref mv.Stats.SuccessNs) / 1000));
        Family("nabla_inference_queue_duration_us", "counter", "Cumulative time successful requests waited in the queue, microseconds.",
            (mv, l) => Line("nabla_inference_queue_duration_us", l, Interlocked.Read(ref mv.Stats.QueueNs) / 1000));
        Family("nabla_inference_compute_input_duration_us", "counter", "Cumulative input preparation time, microseconds.",
            (mv, l) => Line("nabla_inference_compute_input_duration_us", l, Interlocked.Read(ref mv.Stats.InputNs) / 1000));
        Family("nabla_inference_compute_infer_duration_us", "counter", "Cumulative model execution time per request, microseconds.",
            (mv, l) => Line("nabla_inference_compute_infer_duration_us", l, Interlocked.Read(ref mv.Stats.InferNs) / 1000));
        Family("nabla_inference_compute_output_duration_us", "counter", "Cumulative output extraction time, microseconds.",
            (mv, l) => Line("nabla_inference_compute_output_duration_us", l, Interlocked.Read(ref mv.Stats.OutputNs) / 1000));
        HistogramFamily(sb, versions, "nabla_inference_queue_duration_seconds", "Time a request waited in the queue.", s => s.QueueSeconds);
        HistogramFamily(sb, versions, "nabla_inference_compute_duration_seconds", "Time one model execution took.", s => s.ComputeSeconds);
        HistogramFamily(sb, versions, "nabla_inference_request_duration_seconds", "End-to-end time of a successful request.", s => s.RequestSeconds);
        HistogramFamily(sb, versions, "nabla_inference_batch_size", "Batch size of each model execution.", s => s.BatchSize);
        return sb.ToString();
    }

    static void HistogramFamily(StringBuilder sb, IReadOnlyList<ModelVersion> versions, string name, string help, Func<VersionStats, Histogram> pick)
    {
        sb.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
        sb.Append("# TYPE ").Append(name).Append(" histogram\n");
        foreach (var mv in versions)
        {
            var h = pick(mv.Stats);
            var (cum, sum, count) = h.Read();
            var l = Labels(mv);
            for (int i = 0; i < h.Bounds.Count; i++)
                sb.Append(name).Append("_bucket{").Append(l).Append(",le=\"").Append(Number(h.Bounds[i])).Append("\"} ").Append(cum[i]).Append('\n');
            sb.Append(name).Append("_bucket{").Append(l).Append(",le=\"+Inf\"} ").Append(cum[^1]).Append('\n');
            sb.Append(name).Append("_sum{").Append(l).Append("} ").Append(Number(sum)).Append('\n');
            sb.Append(name).Append("_count{").Append(l).Append("} ").Append(count).Append('\n');
        }
    }

    static string Labels(ModelVersion mv) => $"model=\"{Escape(mv.ModelName)}\",version=\"{mv.VersionString}\"";

    // NOTE: model names are folder names ([A-Za-z0-9_.-]); escaping is kept for hosts that relax that rule.
    static string Escape(string s) => s.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);

    static string Number(double v) => v.ToString("R", CultureInfo.InvariantCulture);
}
