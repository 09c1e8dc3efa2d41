using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using Nabla.Graph;
using Nabla.Interop.Onnx;

namespace Nabla.Serving;

/// <summary>Triton's model and version states, as the repository index prints them.</summary>
public enum ModelState { Unknown, Loading, Ready, Unavailable, Unloading }

/// <summary>One row of the repository index: a model version (or a model with no loadable version) and its state.</summary>
public sealed record IndexEntry(string Name, string? Version, ModelState State, string Reason)
{
    public string StateName => State.ToString().ToUpperInvariant();
}

/// <summary>
/// A loaded, runnable model version with <see cref="ModelConfig.InstanceCount"/> instances: <see cref="Gate"/> admits
/// that many executions at once, and each takes an instance of its own (<see cref="RentInstance"/>), so no two runs
/// share an executor. With a dynamic_batching block, requests go through <see cref="Batcher"/>. A version replaced or
/// unloaded is retired: it finishes the requests it holds, then stops its batcher and is left to the GC
/// (<see cref="Freed"/>).
/// </summary>
public sealed class ModelVersion
{
    public required string ModelName { get; init; }
    public required long Version { get; init; }
    /// <summary>The configuration this version runs with: the declared one, completed from the model file.</summary>
    public required ModelConfig Config { get; init; }
    /// <summary>The first instance (the one loaded from the file); the others share its graph and weights.</summary>
    public required OnnxModel Model { get; init; }
    /// <summary>Admits as many executions as there are instances; hold it while an instance is rented.</summary>
    public SemaphoreSlim Gate { get; private set; } = new(1, 1);
    readonly ConcurrentBag<OnnxModel> idle = [];

    /// <summary>Creates the instances (before the version takes traffic).</summary>
    internal void CreateInstances(int count)
    {
        Gate = new SemaphoreSlim(count, count);
        idle.Add(Model);
        for (int i = 1; i < count; i++) idle.Add(Model.NewInstance());
    }

    /// <summary>An idle instance; the caller holds <see cref="Gate"/>, so one is always there.</summary>
    internal OnnxModel RentInstance() =>
        idle.TryTake(out var m) ? m : throw new InvalidOperationException($"model '{ModelName}' version {Version}: no idle instance although the gate admitted the execution");

    internal void ReturnInstance(OnnxModel m) => idle.Add(m);
    public VersionStats Stats { get; } = new();
    public string VersionString => Version.ToString(CultureInfo.InvariantCulture);
    internal DynamicBatcher? Batcher { get; set; }
    internal ServingOptions? Options { get; init; }
    /// <summary>Whether the warm-up request ran before the version took traffic.</summary>
    public bool WarmedUp { get; internal set; }

    int inFlight, retired, freed;
    readonly TaskCompletionSource freedTcs = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completes once the version is retired and its last request finished.</summary>
    public Task Freed => freedTcs.Task;
    public bool Retired => Volatile.Read(ref retired) != 0;
    public int InFlight => Volatile.Read(ref inFlight);

    /// <summary>Counts a request in; false (and nothing counted) when the version is already retired.</summary>
    internal bool TryEnter()
    {
        Interlocked.Increment(ref inFlight);
        if (Volatile.Read(ref retired) == 0) return true;
        Exit();
        return false;
    }

    internal void Exit()
    {
        if (Interlocked.Decrement(ref inFlight) == 0 && Volatile.Read(ref retired) != 0) Free();
    }

    internal void Retire()
    {
        if (Interlocked.Exchange(ref retired, 1) != 0) return;
        if (Volatile.Read(ref inFlight) == 0) Free();
    }

    void Free()
    {
        if (Interlocked.Exchange(ref freed, 1) != 0) return;
        Batcher?.Stop();
        freedTcs.TrySetResult();
    }
}

/// <summary>
/// The model repository: <c>DIR/&lt;model&gt;/config.json</c> (optional) and numeric version folders
/// <c>DIR/&lt;model&gt;/&lt;n&gt;/model.onnx</c> (or a saved Nabla graph, <c>model.nabla.json</c>). Loads every model at start; a model or version that fails is kept in
/// the index as UNAVAILABLE with its reason and never stops the others. Load and unload replace a model's entry
/// atomically, so requests already holding a <see cref="ModelVersion"/> finish on it.
/// </summary>
public sealed partial class ModelRepository
{
    /// <param name="Signature">size and mtime of the model file when it was tried (a failed version is retried only when it changes)</param>
    sealed record Slot(long Version, ModelState State, string Reason, ModelVersion? Loaded, string? Signature = null);

    /// <param name="ConfigText">config.json as read at load time (null: none), so polling notices edits</param>
    sealed record Entry(string Name, ModelConfig? Config, string Reason, IReadOnlyList<Slot> Slots, string? ConfigText = null)
    {
        public IEnumerable<Slot> Ready => Slots.Where(s => s.State == ModelState.Ready);
    }

    readonly Dictionary<string, Entry> entries = new(StringComparer.Ordinal);
    readonly Lock entriesLock = new();
    readonly SemaphoreSlim mutate = new(1, 1);
    readonly ILogger logger;
    readonly ServingOptions? options;

    public string Root { get; }

    public ModelRepository(string root, ILogger? logger = null, ServingOptions? options = null)
    {
        Root = Path.GetFullPath(root);
        this.options = options;
        this.logger = logger ?? Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;
    }

    [GeneratedRegex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")]
    private static partial Regex NamePattern();

    /// <summary>A model name is a folder name: letters, digits, '_', '-', '.', not starting with '.' or '-', at most 128 characters.</summary>
    public static bool IsValidName(string name) => NamePattern().IsMatch(name) && !name.Contains("..", StringComparison.Ordinal);

    /// <summary>The model folder names present in the repository (invalid and hidden names skipped).</summary>
    public IReadOnlyList<string> ScanNames()
    {
        if (!Directory.Exists(Root)) return [];
        return Directory.EnumerateDirectories(Root).Select(Path.GetFileName).OfType<string>()
            .Where(IsValidName).Order(StringComparer.Ordinal).ToList();
    }

    /// <summary>Loads every model in the repository; failures are recorded, never thrown.</summary>
    public async Task LoadAllAsync(CancellationToken ct = default)
    {
        if (!Directory.Exists(Root)) throw new DirectoryNotFoundException($"model repository '{Root}' does not exist");
        foreach (var name in ScanNames())
        {
            ct.ThrowIfCancellationRequested();
            try { await LoadCoreAsync(name, null, ct).ConfigureAwait(false); }
            catch (ServingException e) { logger.LogWarning("model '{Model}' is unavailable: {Reason}", name, e.Message); }
        }
    }

    /// <summary>
    /// Loads (or reloads) one model from its folder. With <paramref name="configJson"/>, that configuration replaces
    /// config.json. When a reload yields no ready version, the versions already loaded keep serving.
    /// </summary>
    /// <exception cref="ServingException">400 for a bad name or when no version could be loaded, 404 when the folder is missing.</exception>
    public Task LoadAsync(string name, string? configJson = null, CancellationToken ct = default)
    {
        CheckExplicit("load");
        return LoadCoreAsync(name, configJson, ct);
    }

    void CheckExplicit(string what)
    {
        if (options?.ModelControlMode == ModelControlMode.Poll)
            throw ServingException.Invalid($"explicit model {what} is not allowed while the repository is polled (model control mode POLL)");
    }

    async Task LoadCoreAsync(string name, string? configJson, CancellationToken ct)
    {
        CheckName(name);
        var dir = Path.Combine(Root, name);
        if (!Directory.Exists(dir)) throw ServingException.NotFound($"model '{name}' is not in the repository");
        await mutate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var old = Get(name);
            if (old is null || !old.Ready.Any())
                Set(new Entry(name, old?.Config, "loading", [.. (old?.Slots ?? []).Select(s => s with { State = ModelState.Loading, Reason = "loading" })]));
            var fresh = await Task.Run(() => Build(name, dir, configJson), ct).ConfigureAwait(false);
            if (!fresh.Ready.Any() && old is not null && old.Ready.Any())
                throw ServingException.Invalid($"failed to load '{name}' ({Reasons(fresh)}); the versions already loaded keep serving");
            Set(fresh);
            if (!fresh.Ready.Any()) throw ServingException.Invalid($"failed to load '{name}': {Reasons(fresh)}");
            foreach (var s in fresh.Slots)
            {
                if (s.State == ModelState.Ready) logger.LogInformation("loaded model '{Model}' version {Version}", name, s.Version);
                else logger.LogWarning("model '{Model}' version {Version} is unavailable: {Reason}", name, s.Version, s.Reason);
            }
        }
        finally { mutate.Release(); }
    }

    static string Reasons(Entry e) => e.Slots.Count == 0 ? e.Reason : string.Join("; ", e.Slots.Select(s => $"version {s.Version}: {s.Reason}"));

    /// <summary>Unloads every version of a model; requests already running finish, new ones get 503.</summary>
    public async Task UnloadAsync(string name, CancellationToken ct = default)
    {
        CheckExplicit("unload");
        CheckName(name);
        await mutate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var old = Get(name);
            if (old is null)
            {
                if (!Directory.Exists(Path.Combine(Root, name))) throw ServingException.NotFound($"unknown model '{name}'");
                Set(new Entry(name, null, "unloaded", []));
                return;
            }
            Set(old with { Reason = "unloaded", Slots = [.. old.Slots.Select(s => new Slot(s.Version, ModelState.Unavailable, "unloaded", null))] });
            logger.LogInformation("unloaded model '{Model}'", name);
        }
        finally { mutate.Release(); }
    }

    /// <summary>At shutdown: every loaded version finishes what it holds, then its batcher loop ends.</summary>
    internal void RetireAll()
    {
        foreach (var e in Snapshot())
            foreach (var s in e.Slots)
                s.Loaded?.Retire();
    }

    // ---- polling (model control mode POLL) ----

    /// <summary>A file that marks a version folder complete at once (without it, the model file must be unchanged for one poll).</summary>
    public const string ReadyMarker = ".ready";

    /// <summary>Model file path → size:mtime when last looked at (guarded by <see cref="mutate"/>).</summary>
    readonly Dictionary<string, string?> seen = new(StringComparer.Ordinal);
    /// <summary>Model name → the config.json text last tried, so a failing edit is tried once, not at every poll.</summary>
    readonly Dictionary<string, string?> triedConfig = new(StringComparer.Ordinal);

    /// <summary>
    /// One pass over the repository: new models load; a new version folder loads once complete (its model file
    /// present and readable, and either a <c>.ready</c> file beside it or the same size and mtime as at the previous
    /// poll), is warmed up, then takes the traffic, and the versions it replaces drain and are freed; a version that
    /// fails leaves the versions already serving in place and shows its reason in the index; an edited config.json
    /// reloads the model (kept as it was when the edit fails); a removed folder unloads the model.
    /// </summary>
    public async Task PollAsync(CancellationToken ct = default)
    {
        await mutate.WaitAsync(ct).ConfigureAwait(false);
        try { await Task.Run(PollOnce, ct).ConfigureAwait(false); }
        finally { mutate.Release(); }
    }

    void PollOnce()
    {
        var current = new Dictionary<string, string?>(StringComparer.Ordinal);
        bool Complete(string file)
        {
            var sig = Signature(file);
            if (sig is null) return false;
            current[file] = sig;
            bool marked = File.Exists(Path.Combine(Path.GetDirectoryName(file)!, ReadyMarker));
            return (marked || seen.TryGetValue(file, out var prev) && prev == sig) && CanRead(file);
        }
        var names = new SortedSet<string>(ScanNames(), StringComparer.Ordinal);
        foreach (var e in Snapshot()) names.Add(e.Name);
        foreach (var name in names)
        {
            var dir = Path.Combine(Root, name);
            var old = Get(name);
            if (!Directory.Exists(dir))
            {
                if (old is not null && old.Slots.Any(s => s.Loaded is not null))
                {
                    Set(old with { Reason = "removed from the repository", Slots = [.. old.Slots.Select(s => new Slot(s.Version, ModelState.Unavailable, "removed from the repository", null))] });
                    logger.LogInformation("model '{Model}' was removed from the repository; unloaded", name);
                }
                continue;
            }
            string? text;
            try
            {
                var path = Path.Combine(dir, "config.json");
                text = File.Exists(path) ? File.ReadAllText(path) : null;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { continue; }
            Entry fresh;
            if (old is null || text != old.ConfigText)
            {
                if (old is not null && triedConfig.TryGetValue(name, out var tried) && tried == text) continue;
                triedConfig[name] = text;
                fresh = Build(name, dir, null, Complete);
                if (old is not null && old.Ready.Any() && !fresh.Ready.Any())
                {
                    logger.LogWarning("model '{Model}': the edited configuration did not load ({Reason}); the loaded versions keep serving", name, Reasons(fresh));
                    continue;
                }
            }
            else
            {
                fresh = Build(name, dir, null, Complete, reuse: old);
                // NOTE: while a selected version is broken, the versions that served before keep serving beside it.
                if (fresh.Slots.Any(s => s.State != ModelState.Ready))
                {
                    var keep = old.Ready.Where(s => !fresh.Slots.Any(f => f.Version == s.Version)).ToList();
                    if (keep.Count > 0) fresh = fresh with { Slots = [.. fresh.Slots.Concat(keep).OrderBy(s => s.Version)] };
                }
                if (fresh.Reason == old.Reason && fresh.Slots.SequenceEqual(old.Slots)) continue;
            }
            Set(fresh);
            foreach (var s in fresh.Slots)
            {
                if (old?.Slots.Contains(s) == true) continue;
                if (s.State == ModelState.Ready) logger.LogInformation("poll: loaded model '{Model}' version {Version}", name, s.Version);
                else logger.LogWarning("poll: model '{Model}' version {Version} is unavailable: {Reason}", name, s.Version, s.Reason);
            }
        }
        foreach (var (file, sig) in current) seen[file] = sig;
    }

    static bool CanRead(string file)
    {
        try
        {
            using var f = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            return f.Length > 0 && f.ReadByte() >= 0;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    static void CheckName(string name)
    {
        if (!IsValidName(name)) throw ServingException.Invalid($"invalid model name '{WireTypes.Clip(name)}'");
    }

    Entry? Get(string name)
    {
        lock (entriesLock) return entries.GetValueOrDefault(name);
    }

    /// <summary>Publishes an entry; loaded versions it no longer holds are retired (they finish their requests, then free).</summary>
    void Set(Entry e)
    {
        Entry? old;
        lock (entriesLock)
        {
            old = entries.GetValueOrDefault(e.Name);
            entries[e.Name] = e;
        }
        if (old is null) return;
        foreach (var s in old.Slots)
            if (s.Loaded is { } mv && !e.Slots.Any(n => ReferenceEquals(n.Loaded, mv)))
            {
                mv.Retire();
                logger.LogInformation("model '{Model}' version {Version} retired; it is freed after its {Count} requests in flight", mv.ModelName, mv.Version, mv.InFlight);
            }
    }

    Entry[] Snapshot()
    {
        lock (entriesLock) return [.. entries.Values.OrderBy(e => e.Name, StringComparer.Ordinal)];
    }

    /// <summary>
    /// Reads the folder and loads each selected version; never throws for a bad model. <paramref name="complete"/>
    /// filters the version folders (polling); with <paramref name="reuse"/>, versions it serves (and failures whose
    /// file did not change) are kept as they are instead of being loaded again.
    /// </summary>
    Entry Build(string name, string dir, string? configJson, Func<string, bool>? complete = null, Entry? reuse = null)
    {
        ModelConfig declared;
        string? text = null;
        try
        {
            var path = Path.Combine(dir, "config.json");
            text = File.Exists(path) ? File.ReadAllText(path) : null;
            declared = configJson is not null ? ModelConfig.Parse(configJson, name)
                : text is not null ? ModelConfig.Parse(text, name)
                : new ModelConfig { Name = name };
        }
        catch (Exception e) when (e is ModelFormatException or IOException or UnauthorizedAccessException)
        {
            return new Entry(name, null, e.Message, [], text);
        }
        var available = new List<long>();
        foreach (var sub in Directory.EnumerateDirectories(dir))
        {
            var v = Path.GetFileName(sub);
            // NOTE: as in Triton, only positive decimal names without a leading zero are versions; other folders are ignored.
            if (v.Length > 0 && v.Length <= 18 && v[0] != '0' && v.All(char.IsAsciiDigit)
                && (complete is null || complete(ModelFileIn(sub, declared))))
                available.Add(long.Parse(v, CultureInfo.InvariantCulture));
        }
        var selected = declared.VersionPolicy.Select(available).ToList();
        if (selected.Count == 0)
            return new Entry(name, declared,
                available.Count == 0 ? complete is null ? "no version folders (1/, 2/, ...)" : "no complete version folder yet (1/, 2/, ... with the model file)"
                : "the version policy selects no version", [], text);
        var slots = new List<Slot>();
        foreach (var v in selected)
        {
            var file = ModelFileIn(Path.Combine(dir, v.ToString(CultureInfo.InvariantCulture)), declared);
            var signature = Signature(file);
            seen[file] = signature;
            var kept = reuse?.Slots.FirstOrDefault(s => s.Version == v);
            if (kept is { State: ModelState.Ready, Loaded: not null } || kept is { State: ModelState.Unavailable } && kept.Signature == signature && kept.Signature is not null)
            {
                slots.Add(kept);
                continue;
            }
            slots.Add(LoadVersion(name, v, declared, file, signature));
        }
        return new Entry(name, declared, "", slots, text);
    }

    /// <summary>Loads one version file, warms it up and starts its batcher; a failure becomes an UNAVAILABLE slot with its reason.</summary>
    Slot LoadVersion(string name, long v, ModelConfig declared, string file, string? signature)
    {
        try
        {
            if (!File.Exists(file)) throw new ModelFormatException($"{declared.DefaultModelFilename}{(declared.DefaultModelFilename == "model.onnx" ? $" (or {NablaGraphFilename})" : "")} not found in version folder {v}");
            var model = OnnxModel.Load(file);
            var config = Complete(declared, model.Graph, model.StringValues);
            var mv = new ModelVersion { ModelName = name, Version = v, Config = config, Model = model, Options = options };
            mv.CreateInstances(config.InstanceCount);
            try { Warmup(mv); }
            catch (Exception e) when (e is NablaException or ServingException or ArgumentException or InvalidOperationException)
            {
                throw new ModelFormatException($"warm-up request failed: {e.Message}");
            }
            if (config.DynamicBatching is not null) mv.Batcher = new DynamicBatcher(mv);
            return new Slot(v, ModelState.Ready, "", mv, signature);
        }
        catch (Exception e) when (e is NablaException or IOException or UnauthorizedAccessException or OutOfMemoryException)
        {
            return new Slot(v, ModelState.Unavailable, e.Message, null, signature);
        }
    }

    /// <summary>
    /// Runs one zero-filled request of the configuration's shape (batch 1, variable dims 1; BYTES elements "0") before the
    /// version takes traffic; skipped when an input's rank is unknown. Not counted in the statistics.
    /// </summary>
    static void Warmup(ModelVersion mv)
    {
        var c = mv.Config;
        if (c.Inputs.Any(t => t.AnyRank)) return;
        var feeds = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var t in c.Inputs)
        {
            var shape = c.ExposedShape(t).Select(d => d < 0 ? 1 : checked((int)d)).ToArray();
            if (t.Datatype == WireTypes.Bytes)
            {
                // NOTE: "0" rather than empty strings, so graphs that parse numbers (Cast to a number) warm up too.
                feeds[t.Name] = new StringTensor([.. Enumerable.Range(0, (int)TensorCodec.Numel(shape)).Select(_ => "0"u8.ToArray())], shape).ToCarrier();
                continue;
            }
            var dtype = WireTypes.ToDType(t.Datatype) ?? throw new ModelFormatException($"input '{t.Name}': datatype {t.Datatype} is not supported");
            feeds[t.Name] = Tensor.Zeros(shape, dtype);
        }
        mv.Model.Run(feeds);
        mv.WarmedUp = true;
    }

    /// <summary>Size and last write time of a file, or null when it cannot be read.</summary>
    static string? Signature(string file)
    {
        try
        {
            var info = new FileInfo(file);
            if (!info.Exists) return null;
            var sig = $"{info.Length}:{info.LastWriteTimeUtc.Ticks}";
            // A saved Nabla graph is two files: the weights count too.
            if (!Nabla.Graph.GraphFile.IsGraphFile(file)) return sig;
            var weights = new FileInfo(Nabla.Graph.GraphFile.WeightsPathFor(file));
            return weights.Exists ? $"{sig}+{weights.Length}:{weights.LastWriteTimeUtc.Ticks}" : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>Checks the declared inputs and outputs against the graph and fills in what the config leaves out.</summary>
    internal static ModelConfig Complete(ModelConfig c, Graph.Graph g, IReadOnlySet<string>? strings = null)
    {
        strings ??= new HashSet<string>();
        var graphInputs = g.Inputs.Where(v => !g.Initializers.ContainsKey(v.Name)).ToList();
        var inputs = c.Inputs.Count > 0 ? c.Inputs : [.. graphInputs.Select(v => FromGraph(v, c.MaxBatchSize, strings))];
        var outputs = c.Outputs.Count > 0 ? c.Outputs : [.. g.Outputs.Select(v => FromGraph(v, c.MaxBatchSize, strings))];
        foreach (var t in inputs)
        {
            var v = g.Inputs.FirstOrDefault(x => x.Name == t.Name)
                ?? throw new ModelFormatException($"config input '{t.Name}' is not an input of the model; its inputs are {string.Join(", ", graphInputs.Select(x => x.Name))}");
            Match(c, t, v, "input", strings);
        }
        foreach (var v in graphInputs)
            if (!inputs.Any(t => t.Name == v.Name)) throw new ModelFormatException($"model input '{v.Name}' is not declared in the config");
        foreach (var t in outputs)
        {
            var v = g.Outputs.FirstOrDefault(x => x.Name == t.Name)
                ?? throw new ModelFormatException($"config output '{t.Name}' is not an output of the model; its outputs are {string.Join(", ", g.Outputs.Select(x => x.Name))}");
            Match(c, t, v, "output", strings);
        }
        return new ModelConfig
        {
            Name = c.Name, Platform = c.Platform, MaxBatchSize = c.MaxBatchSize, Inputs = inputs, Outputs = outputs,
            VersionPolicy = c.VersionPolicy, DynamicBatching = c.DynamicBatching, DefaultModelFilename = c.DefaultModelFilename,
            Parameters = c.Parameters, InstanceCount = c.InstanceCount,
        };
    }

    /// <summary>The wire type of a graph value: BYTES for an ONNX STRING, else its dtype's name; null when unknown.</summary>
    static string? WireOf(ValueInfo v, IReadOnlySet<string> strings) =>
        strings.Contains(v.Name) ? WireTypes.Bytes : v.DType is { } dt ? WireTypes.FromDType(dt) : null;

    static TensorSpec FromGraph(ValueInfo v, int maxBatch, IReadOnlySet<string> strings)
    {
        if (WireOf(v, strings) is not { } wire) throw new ModelFormatException($"model tensor '{v.Name}' has no element type; declare it in config.json");
        if (v.Shape is null) return new TensorSpec(v.Name, wire, [], AnyRank: true);
        var dims = v.Shape.Select(d => d.Value ?? -1).ToArray();
        if (maxBatch > 0)
        {
            if (dims.Length == 0) throw new ModelFormatException($"model tensor '{v.Name}' is a scalar, but max_batch_size > 0 needs a batch dimension");
            dims = dims[1..];
        }
        return new TensorSpec(v.Name, wire, dims);
    }

    static void Match(ModelConfig c, TensorSpec t, ValueInfo v, string kind, IReadOnlySet<string> strings)
    {
        if (WireOf(v, strings) is { } wire && wire != t.Datatype)
            throw new ModelFormatException($"config {kind} '{t.Name}' is {t.Datatype}, but the model's is {wire}");
        if (v.Shape is null || t.AnyRank) return;
        var want = c.ExposedShape(t);
        if (v.Shape.Length != want.Length)
            throw new ModelFormatException($"config {kind} '{t.Name}' has shape [{string.Join(", ", want)}] (rank {want.Length}), but the model's is [{string.Join(", ", v.Shape)}]");
        for (int i = c.MaxBatchSize > 0 ? 1 : 0; i < want.Length; i++)
            if (v.Shape[i].Value is { } fixedDim && want[i] != -1 && want[i] != fixedDim)
                throw new ModelFormatException($"config {kind} '{t.Name}' has shape [{string.Join(", ", want)}], but the model's is [{string.Join(", ", v.Shape)}]");
    }

    // ---- queries ----

    /// <summary>The version a request names, or the highest ready one; 404 for unknown model/version, 503 for one not ready.</summary>
    public ModelVersion Resolve(string model, string? version)
    {
        var e = Known(model);
        if (!string.IsNullOrEmpty(version))
        {
            var slot = FindSlot(e, version);
            return slot.Loaded is { } lv && slot.State == ModelState.Ready ? lv
                : throw ServingException.Unavailable($"model '{model}' version {version} is not ready: {slot.Reason}");
        }
        return e.Ready.LastOrDefault()?.Loaded
            ?? throw ServingException.Unavailable($"model '{model}' has no ready version: {Reasons(e)}");
    }

    Entry Known(string model) =>
        (IsValidName(model) ? Get(model) : null) ?? throw ServingException.NotFound($"unknown model '{WireTypes.Clip(model)}'");

    static Slot FindSlot(Entry e, string version)
    {
        if (!long.TryParse(version, NumberStyles.None, CultureInfo.InvariantCulture, out var v))
            throw ServingException.NotFound($"unknown version '{WireTypes.Clip(version)}' of model '{e.Name}'");
        return e.Slots.FirstOrDefault(s => s.Version == v)
            ?? throw ServingException.NotFound($"unknown version {version} of model '{e.Name}'; it serves {(e.Slots.Count == 0 ? "none" : string.Join(", ", e.Slots.Select(s => s.Version)))}");
    }

    /// <summary>Whether a model (or one of its versions) is ready, and why not; 404 for an unknown model or version.</summary>
    public (bool Ready, string Reason) IsReady(string model, string? version)
    {
        var e = Known(model);
        if (!string.IsNullOrEmpty(version))
        {
            var s = FindSlot(e, version);
            return (s.State == ModelState.Ready, s.Reason);
        }
        return e.Ready.Any() ? (true, "") : (false, Reasons(e));
    }

    /// <summary>The ready version numbers of a model, ascending.</summary>
    public IReadOnlyList<long> ReadyVersions(string model) => [.. Known(model).Ready.Select(s => s.Version)];

    /// <summary>The configuration of a version (or of the highest ready one, else the declared one).</summary>
    public ModelConfig ConfigOf(string model, string? version)
    {
        var e = Known(model);
        if (!string.IsNullOrEmpty(version))
            return FindSlot(e, version).Loaded?.Config ?? e.Config ?? throw ServingException.Unavailable($"model '{model}' has no valid configuration: {e.Reason}");
        return e.Ready.LastOrDefault()?.Loaded?.Config ?? e.Config
            ?? throw ServingException.Unavailable($"model '{model}' has no valid configuration: {e.Reason}");
    }

    /// <summary>Loaded versions for the statistics endpoint, filtered by model and version when given.</summary>
    public IReadOnlyList<ModelVersion> LoadedVersions(string? model, string? version)
    {
        IEnumerable<Entry> es = string.IsNullOrEmpty(model) ? Snapshot() : [Known(model)];
        if (!string.IsNullOrEmpty(version))
        {
            var e = es.Single();
            var s = FindSlot(e, version);
            return s.Loaded is { } lv ? [lv] : [];
        }
        return [.. es.SelectMany(e => e.Slots).Select(s => s.Loaded).OfType<ModelVersion>()];
    }

    /// <summary>Every model in the repository: one row per served version, one per model with none; folders never loaded show UNAVAILABLE.</summary>
    public IReadOnlyList<IndexEntry> Index(bool readyOnly)
    {
        var rows = new List<IndexEntry>();
        var snap = Snapshot();
        var names = new SortedSet<string>(snap.Select(e => e.Name), StringComparer.Ordinal);
        foreach (var n in ScanNames()) names.Add(n);
        foreach (var n in names)
        {
            var e = snap.FirstOrDefault(x => x.Name == n);
            if (e is null) rows.Add(new IndexEntry(n, null, ModelState.Unavailable, "not loaded"));
            else if (e.Slots.Count == 0) rows.Add(new IndexEntry(n, null, ModelState.Unavailable, e.Reason));
            else rows.AddRange(e.Slots.Select(s => new IndexEntry(n, s.Version.ToString(CultureInfo.InvariantCulture), s.State, s.Reason)));
        }
        return readyOnly ? [.. rows.Where(r => r.State == ModelState.Ready)] : rows;
    }
}
