using System.Diagnostics;

namespace Nabla.Serving;

/// <summary>One request input as a transport parsed it; <see cref="Decode"/> turns its data into a tensor once the shape and datatype are checked.</summary>
/// <param name="Decode">(wire datatype, checked shape, description for errors) → tensor (a <see cref="Nabla.Interop.Onnx.StringTensor"/>
/// carrier for BYTES); throws <see cref="ServingException"/> on bad data. The engine owns the tensor it returns: once the run
/// is done it is disposed (its memory may serve the next request) unless the graph handed it back as an output, so return
/// a new tensor on every call, not one the caller keeps using.</param>
public sealed record InferInput(string Name, string Datatype, IReadOnlyList<long> Shape, Func<string, int[], string, Tensor> Decode);

/// <summary>An output the client asked for; <paramref name="Binary"/> asks for raw bytes (REST binary extension).</summary>
public sealed record RequestedOutput(string Name, bool? Binary);

public sealed record InferOutput(string Name, string Datatype, long[] Shape, Tensor Value, bool Binary);

/// <summary>The outputs of one request. <see cref="Dispose"/> gives their tensors' memory back to the buffer cache (the
/// next request's outputs reuse it); the REST and gRPC transports call it once the response is encoded, and a caller of
/// <see cref="InferenceEngine.InferAsync"/> that has read the outputs may too.</summary>
public sealed record InferResult(ModelVersion Model, IReadOnlyList<InferOutput> Outputs) : IDisposable
{
    public void Dispose()
    {
        foreach (var o in Outputs) o.Value.Dispose();
    }
}

/// <summary>
/// The transport-neutral inference path shared by REST and gRPC: resolve the model version, check every input's
/// name, datatype, shape and element count against its configuration, run the graph, pick the requested outputs, and
/// count statistics.
/// </summary>
public sealed class InferenceEngine(ModelRepository repository, ServerState state)
{
    public async Task<InferResult> InferAsync(string model, string? version, IReadOnlyList<InferInput> inputs,
        IReadOnlyList<RequestedOutput>? outputs, bool binaryByDefault, CancellationToken ct)
    {
        if (state.Draining) throw ServingException.Unavailable("the server is shutting down");
        // NOTE: a version retired between Resolve and TryEnter (a swap) is skipped; the next Resolve sees its successor.
        for (int attempt = 0; ; attempt++)
        {
            var mv = repository.Resolve(model, version);
            if (!mv.TryEnter())
            {
                if (attempt < 3) continue;
                throw ServingException.Unavailable($"model '{mv.ModelName}' version {mv.Version} is being replaced; retry");
            }
            try { return await RunAsync(mv, inputs, outputs, binaryByDefault, ct).ConfigureAwait(false); }
            finally { mv.Exit(); }
        }
    }

    async Task<InferResult> RunAsync(ModelVersion mv, IReadOnlyList<InferInput> inputs, IReadOnlyList<RequestedOutput>? outputs,
        bool binaryByDefault, CancellationToken ct)
    {
        long start = Stopwatch.GetTimestamp();
        var stats = mv.Stats;
        try
        {
            var config = mv.Config;
            var feeds = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            long batch = 1;
            foreach (var input in inputs)
            {
                var spec = config.Inputs.FirstOrDefault(t => t.Name == input.Name)
                    ?? throw ServingException.Invalid($"unknown input '{WireTypes.Clip(input.Name)}' for model '{mv.ModelName}'; its inputs are {string.Join(", ", config.Inputs.Select(t => t.Name))}");
                if (feeds.ContainsKey(input.Name)) throw ServingException.Invalid($"input '{input.Name}' is given twice");
                var what = $"input '{input.Name}'";
                if (input.Datatype != spec.Datatype)
                {
                    WireTypes.Check(input.Datatype, what);   // a name outside the protocol, else a known type the model does not take
                    throw ServingException.Invalid($"{what}: datatype {input.Datatype} does not match the model's {spec.Datatype}");
                }
                var dims = TensorCodec.CheckShape(input.Shape, what);
                CheckShape(config, spec, dims, what);
                if (config.MaxBatchSize > 0)
                {
                    if (feeds.Count > 0 && dims[0] != batch)
                        throw ServingException.Invalid($"{what}: batch size {dims[0]} differs from the other inputs' {batch}");
                    batch = dims[0];
                }
                feeds[input.Name] = input.Decode(input.Datatype, dims, what);
            }
            var missing = config.Inputs.Where(t => !feeds.ContainsKey(t.Name)).Select(t => t.Name).ToList();
            if (missing.Count > 0) throw ServingException.Invalid($"missing input{(missing.Count > 1 ? "s" : "")} {string.Join(", ", missing.Select(n => $"'{n}'"))} for model '{mv.ModelName}'");
            var wanted = new List<(TensorSpec spec, bool binary)>();
            if (outputs is null || outputs.Count == 0) wanted.AddRange(config.Outputs.Select(o => (o, binaryByDefault)));
            else
            {
                foreach (var o in outputs)
                {
                    var spec = config.Outputs.FirstOrDefault(t => t.Name == o.Name)
                        ?? throw ServingException.Invalid($"unknown output '{WireTypes.Clip(o.Name)}' for model '{mv.ModelName}'; its outputs are {string.Join(", ", config.Outputs.Select(t => t.Name))}");
                    if (wanted.Any(w => w.spec.Name == o.Name)) throw ServingException.Invalid($"output '{o.Name}' is requested twice");
                    wanted.Add((spec, o.Binary ?? binaryByDefault));
                }
            }
            long prepared = Stopwatch.GetTimestamp();

            Dictionary<string, Tensor> results;
            long queueTicks, inputTicks, inferTicks, batchOutputTicks;
            if (mv.Batcher is { } batcher)
            {
                var outcome = await batcher.SubmitAsync(feeds, (int)batch, ct).ConfigureAwait(false);
                (results, queueTicks, inputTicks, inferTicks, batchOutputTicks) =
                    (outcome.Outputs, outcome.QueueTicks, outcome.InputTicks, outcome.InferTicks, outcome.OutputTicks);
            }
            else
            {
                await mv.Gate.WaitAsync(ct).ConfigureAwait(false);
                queueTicks = Stopwatch.GetTimestamp() - prepared;
                try { (results, inferTicks) = await ExecuteAsync(mv, feeds, ct).ConfigureAwait(false); }
                finally { mv.Gate.Release(); }
                (inputTicks, batchOutputTicks) = (0, 0);
            }
            long ran = Stopwatch.GetTimestamp();

            var outs = new List<InferOutput>(wanted.Count);
            foreach (var (spec, binary) in wanted)
            {
                if (!results.TryGetValue(spec.Name, out var t))
                    throw new ServingException(ServingErrorKind.Internal, $"model '{mv.ModelName}' produced no output '{spec.Name}'") { Reason = FailureReason.Backend };
                outs.Add(new InferOutput(spec.Name, WireTypes.Of(t), [.. t.Shape.Select(d => (long)d)], t, binary));
            }
            // The inputs and the outputs nobody asked for are done with; the returned ones go with the result.
            DisposeAllBut([.. feeds.Values, .. results.Values], [.. outs.Select(o => o.Value)]);
            long done = Stopwatch.GetTimestamp();
            if (mv.Batcher is null) stats.Execution((int)batch, prepared - start, inferTicks, done - ran);
            VersionStats.Add(ref stats.InputCount, ref stats.InputNs, prepared - start + inputTicks);
            VersionStats.Add(ref stats.QueueCount, ref stats.QueueNs, queueTicks);
            VersionStats.Add(ref stats.InferCount, ref stats.InferNs, inferTicks);
            VersionStats.Add(ref stats.OutputCount, ref stats.OutputNs, batchOutputTicks + done - ran);
            VersionStats.Add(ref stats.SuccessCount, ref stats.SuccessNs, done - start);
            stats.QueueSeconds.Observe(queueTicks / (double)Stopwatch.Frequency);
            stats.RequestSeconds.Observe((done - start) / (double)Stopwatch.Frequency);
            Interlocked.Exchange(ref stats.LastInferenceMs, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
            return new InferResult(mv, outs);
        }
        catch (Exception e)
        {
            var reason = e switch
            {
                OperationCanceledException => FailureReason.Canceled,
                ServingException { Reason: { } r } => r,
                _ => FailureReason.Other,
            };
            stats.Fail(reason, Stopwatch.GetTimestamp() - start);
            throw;
        }
    }

    /// <summary>
    /// One model execution on one of the version's execution slots, which the caller holds (<see cref="ModelVersion.Gate"/>):
    /// rents an idle instance, runs the test hook and the graph on it. Returns the outputs and the ticks the graph took.
    /// </summary>
    internal static async Task<(Dictionary<string, Tensor> Results, long InferTicks)> ExecuteAsync(ModelVersion mv,
        Dictionary<string, Tensor> feeds, CancellationToken ct)
    {
        if (mv.Options?.BeforeExecute is { } hook) await hook(mv, ct).ConfigureAwait(false);
        var instance = mv.RentInstance();
        long began = Stopwatch.GetTimestamp();
        // NOTE: the token lives on the instance's executor; no other execution uses this instance until it is returned.
        instance.CancellationToken = ct;
        try { return (instance.Run(feeds), Stopwatch.GetTimestamp() - began); }
        catch (OperationCanceledException) { throw; }
        catch (NablaException e)
        {
            throw new ServingException(ServingErrorKind.InvalidArgument, $"model '{mv.ModelName}' version {mv.Version} failed on this input: {e.Message}")
            { Reason = FailureReason.Backend };
        }
        finally
        {
            instance.CancellationToken = default;
            mv.ReturnInstance(instance);
        }
    }

    /// <summary>
    /// Disposes a run's tensors that are done with (its inputs, the outputs not handed on), except those in
    /// <paramref name="kept"/> (by reference: an input the graph returned as a requested output), so that their memory
    /// serves the next request: a decoded 1×3×224×224 image is 600 KB of fresh memory otherwise, about 1 ms of page
    /// faults per request on the bench machine. A view among the kept tensors keeps its memory alive by itself, and a
    /// tensor listed twice is disposed once.
    /// </summary>
    internal static void DisposeAllBut(IReadOnlyList<Tensor> tensors, IReadOnlyList<Tensor> kept)
    {
        foreach (var t in tensors)
            if (!kept.Any(k => ReferenceEquals(k, t))) t.Dispose();
    }

    static void CheckShape(ModelConfig config, TensorSpec spec, int[] dims, string what)
    {
        if (spec.AnyRank) return;
        var want = config.ExposedShape(spec);
        bool ok = dims.Length == want.Length;
        for (int i = 0; ok && i < dims.Length; i++) ok = want[i] == -1 || want[i] == dims[i];
        if (!ok)
            throw ServingException.Invalid($"{what}: shape [{string.Join(", ", dims)}] does not match the model's [{string.Join(", ", want)}]");
        if (config.MaxBatchSize > 0 && (dims[0] < 1 || dims[0] > config.MaxBatchSize))
            throw ServingException.Invalid($"{what}: batch size {dims[0]} must be in [1, {config.MaxBatchSize}] (max_batch_size)");
    }
}
