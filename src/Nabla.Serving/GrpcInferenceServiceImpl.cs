using System.Globalization;
using Google.Protobuf;
using Grpc.Core;
using Nabla.Serving.Grpc;

namespace Nabla.Serving;

/// <summary>
/// <c>inference.GRPCInferenceService</c>: the same calls as the REST API, with failures as gRPC status codes
/// (INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, ...). Outputs always travel in <c>raw_output_contents</c>, as Triton's do.
/// </summary>
public sealed class GrpcInferenceServiceImpl(ModelRepository repository, ServerState state, InferenceEngine engine, ServingOptions options)
    : GRPCInferenceService.GRPCInferenceServiceBase
{
    static async Task<T> Guard<T>(Func<Task<T>> call)
    {
        try { return await call().ConfigureAwait(false); }
        catch (ServingException e) { throw new RpcException(new Status(e.GrpcStatus, e.Message)); }
    }

    static Task<T> Guard<T>(Func<T> call) => Guard(() => Task.FromResult(call()));

    public override Task<ServerLiveResponse> ServerLive(ServerLiveRequest request, ServerCallContext context) =>
        Task.FromResult(new ServerLiveResponse { Live = true });

    public override Task<ServerReadyResponse> ServerReady(ServerReadyRequest request, ServerCallContext context) =>
        Task.FromResult(new ServerReadyResponse { Ready = state.Ready });

    public override Task<ModelReadyResponse> ModelReady(ModelReadyRequest request, ServerCallContext context) =>
        Guard(() => new ModelReadyResponse { Ready = repository.IsReady(request.Name, request.Version).Ready });

    public override Task<ServerMetadataResponse> ServerMetadata(ServerMetadataRequest request, ServerCallContext context) =>
        Task.FromResult(new ServerMetadataResponse
        {
            Name = options.ServerName,
            Version = typeof(RestApi).Assembly.GetName().Version?.ToString(3) ?? "0",
            Extensions = { RestApi.Extensions },
        });

    public override Task<ModelMetadataResponse> ModelMetadata(ModelMetadataRequest request, ServerCallContext context) => Guard(() =>
    {
        var config = repository.ConfigOf(request.Name, request.Version);
        var r = new ModelMetadataResponse { Name = request.Name, Platform = config.Platform };
        if (request.Version.Length > 0) r.Versions.Add(request.Version);
        else r.Versions.AddRange(repository.ReadyVersions(request.Name).Select(v => v.ToString(CultureInfo.InvariantCulture)));
        foreach (var t in config.Inputs) r.Inputs.Add(new ModelMetadataResponse.Types.TensorMetadata { Name = t.Name, Datatype = t.Datatype, Shape = { config.ExposedShape(t) } });
        foreach (var t in config.Outputs) r.Outputs.Add(new ModelMetadataResponse.Types.TensorMetadata { Name = t.Name, Datatype = t.Datatype, Shape = { config.ExposedShape(t) } });
        return r;
    });

    public override Task<ModelInferResponse> ModelInfer(ModelInferRequest request, ServerCallContext context) => Guard(async () =>
    {
        bool raw = request.RawInputContents.Count > 0;
        if (raw && request.RawInputContents.Count != request.Inputs.Count)
            throw ServingException.Invalid($"raw_input_contents has {request.RawInputContents.Count} entries for {request.Inputs.Count} inputs; it needs one per input");
        var inputs = new List<InferInput>(request.Inputs.Count);
        for (int i = 0; i < request.Inputs.Count; i++)
        {
            var t = request.Inputs[i];
            if (raw)
            {
                if (t.Contents is not null && HasContents(t.Contents))
                    throw ServingException.Invalid($"input '{WireTypes.Clip(t.Name)}': contents and raw_input_contents may not be mixed in one request");
                var bytes = request.RawInputContents[i];
                inputs.Add(new InferInput(t.Name, t.Datatype, t.Shape, (dt, dims, what) => TensorCodec.FromRaw(bytes.Span, dt, dims, what)));
            }
            else
            {
                var contents = t.Contents ?? new InferTensorContents();
                inputs.Add(new InferInput(t.Name, t.Datatype, t.Shape, (dt, dims, what) => TensorCodec.FromContents(contents, dt, dims, what)));
            }
        }
        var outputs = request.Outputs.Select(o =>
        {
            if (o.Parameters.ContainsKey("classification"))
                throw new ServingException(ServingErrorKind.Unimplemented, "the classification extension is not supported");
            return new RequestedOutput(o.Name, true);
        }).ToList();
        var result = await engine.InferAsync(request.ModelName, request.ModelVersion, inputs, outputs, binaryByDefault: true, context.CancellationToken).ConfigureAwait(false);
        using (result)
        {
            var response = new ModelInferResponse { ModelName = result.Model.ModelName, ModelVersion = result.Model.VersionString, Id = request.Id };
            foreach (var o in result.Outputs)
            {
                response.Outputs.Add(new ModelInferResponse.Types.InferOutputTensor { Name = o.Name, Datatype = o.Datatype, Shape = { o.Shape } });
                response.RawOutputContents.Add(UnsafeByteOperations.UnsafeWrap(TensorCodec.ToRaw(o.Value)));   // a copy
            }
            return response;
        }
    });

    static bool HasContents(InferTensorContents c) =>
        c.BoolContents.Count + c.IntContents.Count + c.Int64Contents.Count + c.UintContents.Count + c.Uint64Contents.Count
        + c.Fp32Contents.Count + c.Fp64Contents.Count + c.BytesContents.Count > 0;

    public override Task<RepositoryIndexResponse> RepositoryIndex(RepositoryIndexRequest request, ServerCallContext context) => Guard(() =>
    {
        var r = new RepositoryIndexResponse();
        foreach (var row in repository.Index(request.Ready))
            r.Models.Add(new RepositoryIndexResponse.Types.ModelIndex { Name = row.Name, Version = row.Version ?? "", State = row.StateName, Reason = row.Reason });
        return r;
    });

    public override Task<RepositoryModelLoadResponse> RepositoryModelLoad(RepositoryModelLoadRequest request, ServerCallContext context) => Guard(async () =>
    {
        string? config = null;
        foreach (var (key, value) in request.Parameters)
        {
            if (key == "config" && value.ParameterChoiceCase == ModelRepositoryParameter.ParameterChoiceOneofCase.StringParam) config = value.StringParam;
            else if (key.StartsWith("file:", StringComparison.Ordinal))
                throw new ServingException(ServingErrorKind.Unimplemented, "loading model files sent in the request ('file:' parameters) is not supported");
            else throw ServingException.Invalid($"unknown or mistyped parameter '{WireTypes.Clip(key)}'");
        }
        await repository.LoadAsync(request.ModelName, config, context.CancellationToken).ConfigureAwait(false);
        return new RepositoryModelLoadResponse();
    });

    public override Task<RepositoryModelUnloadResponse> RepositoryModelUnload(RepositoryModelUnloadRequest request, ServerCallContext context) => Guard(async () =>
    {
        await repository.UnloadAsync(request.ModelName, context.CancellationToken).ConfigureAwait(false);
        return new RepositoryModelUnloadResponse();
    });

    public override Task<ModelConfigResponse> ModelConfig(ModelConfigRequest request, ServerCallContext context) => Guard(() =>
    {
        var c = repository.ConfigOf(request.Name, request.Version);
        var m = new Grpc.ModelConfig
        {
            Name = c.Name, Platform = c.Platform, Backend = "nabla", MaxBatchSize = c.MaxBatchSize,
            DefaultModelFilename = c.DefaultModelFilename,
            VersionPolicy = c.VersionPolicy switch
            {
                VersionPolicy.Latest l => new ModelVersionPolicy { Latest = new ModelVersionPolicy.Types.Latest { NumVersions = (uint)l.Count } },
                VersionPolicy.Specific sp => new ModelVersionPolicy { Specific = new ModelVersionPolicy.Types.Specific { Versions = { sp.Versions } } },
                _ => new ModelVersionPolicy { All = new ModelVersionPolicy.Types.All() },
            },
        };
        foreach (var t in c.Inputs) m.Input.Add(new ModelInput { Name = t.Name, DataType = ConfigType(t.Datatype), Dims = { t.Dims } });
        foreach (var t in c.Outputs) m.Output.Add(new ModelOutput { Name = t.Name, DataType = ConfigType(t.Datatype), Dims = { t.Dims } });
        m.InstanceGroup.Add(new ModelInstanceGroup { Name = c.Name, Count = c.InstanceCount, Kind = ModelInstanceGroup.Types.Kind.Cpu });
        if (c.DynamicBatching is { } b)
        {
            var db = new ModelDynamicBatching { MaxQueueDelayMicroseconds = (ulong)b.MaxQueueDelayMicroseconds, PreserveOrdering = b.PreserveOrdering, PreferredBatchSize = { b.PreferredBatchSizes } };
            if (b.DefaultQueuePolicy is { } q)
                db.DefaultQueuePolicy = new ModelQueuePolicy
                {
                    TimeoutAction = q.TimeoutAction == "DELAY" ? ModelQueuePolicy.Types.TimeoutAction.Delay : ModelQueuePolicy.Types.TimeoutAction.Reject,
                    DefaultTimeoutMicroseconds = (ulong)q.DefaultTimeoutMicroseconds, AllowTimeoutOverride = q.AllowTimeoutOverride, MaxQueueSize = (uint)q.MaxQueueSize,
                };
            m.DynamicBatching = db;
        }
        foreach (var (k, v) in c.Parameters) m.Parameters[k] = new ModelParameter { StringValue = v };
        return new ModelConfigResponse { Config = m };
    });

    /// <summary>TYPE_FP32 for FP32 (DataType enum values follow the order of <see cref="WireTypes.All"/>, from 1).</summary>
    static DataType ConfigType(string wire) => (DataType)(WireTypes.All.ToList().IndexOf(wire) + 1);

    public override Task<ModelStatisticsResponse> ModelStatistics(ModelStatisticsRequest request, ServerCallContext context) => Guard(() =>
    {
        var r = new ModelStatisticsResponse();
        foreach (var mv in repository.LoadedVersions(request.Name, request.Version))
        {
            var s = mv.Stats;
            static StatisticDuration D(ref long count, ref long ns) => new() { Count = (ulong)Interlocked.Read(ref count), Ns = (ulong)Interlocked.Read(ref ns) };
            var st = new ModelStatistics
            {
                Name = mv.ModelName, Version = mv.VersionString,
                LastInference = (ulong)Interlocked.Read(ref s.LastInferenceMs),
                InferenceCount = (ulong)s.Inferences, ExecutionCount = (ulong)s.Executions,
                InferenceStats = new InferStatistics
                {
                    Success = D(ref s.SuccessCount, ref s.SuccessNs), Fail = D(ref s.FailCount, ref s.FailNs), Queue = D(ref s.QueueCount, ref s.QueueNs),
                    ComputeInput = D(ref s.InputCount, ref s.InputNs), ComputeInfer = D(ref s.InferCount, ref s.InferNs),
                    ComputeOutput = D(ref s.OutputCount, ref s.OutputNs), CacheHit = new StatisticDuration(), CacheMiss = new StatisticDuration(),
                },
            };
            foreach (var (size, b) in s.Batches.OrderBy(kv => kv.Key))
            {
                long count = Interlocked.Read(ref b.Count);
                st.BatchStats.Add(new InferBatchStatistics
                {
                    BatchSize = (ulong)size, ComputeInput = D(ref count, ref b.InputNs), ComputeInfer = D(ref count, ref b.InferNs), ComputeOutput = D(ref count, ref b.OutputNs),
                });
            }
            r.ModelStats.Add(st);
        }
        return r;
    });
}
