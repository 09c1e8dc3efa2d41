namespace Nabla.NN;

/// <summary>
/// Base of every layer and model, like torch.nn.Module. Parameters, buffers and submodules are registered
/// explicitly (no reflection), so nothing held in a list or dictionary is ever missed; names and order
/// are PyTorch's, so <see cref="StateDict"/> keys match PyTorch checkpoints.
/// </summary>
public abstract class Module
{
    readonly List<(string name, Tensor? value)> parameters = new();
    // A class, not a (string, Tensor?, bool) tuple: a list of reference types shares code that ReadyToRun already holds,
    // where a list of that tuple would be compiled by the JIT when the first model is built.
    sealed record BufferEntry(string name, Tensor? value, bool persistent);
    readonly List<BufferEntry> buffers = new();
    readonly List<(string name, Module module)> children = new();

    public bool Training { get; private set; } = true;

    /// <summary>The main computation. Modules with other signatures add their own overloads.</summary>
    public virtual Tensor Forward(Tensor input) =>
        throw new NotSupportedException($"{GetType().Name} does not take a single tensor input");

    public Tensor Call(Tensor input) => Forward(input);

    protected Tensor RegisterParameter(string name, Tensor value)
    {
        CheckName(name);
        if (!value.DType.IsFloatingPoint()) throw new DTypeException($"register_parameter: parameter '{name}' must be floating point, got {value.DType.TorchName()}");
        value.RequiresGrad = true;
        value.storage.Keep();
        parameters.Add((name, value));
        return value;
    }

    /// <summary>Registers an absent optional parameter (e.g. bias=False); it stays out of the state dict.</summary>
    protected void RegisterNullParameter(string name) => CheckName(name);

    protected Tensor RegisterBuffer(string name, Tensor value, bool persistent = true)
    {
        CheckName(name);
        value.storage.Keep();
        buffers.Add(new(name, value, persistent));
        return value;
    }

    protected T RegisterModule<T>(string name, T module) where T : Module
    {
        CheckName(name);
        children.Add((name, module));
        return module;
    }

    void CheckName(string name)
    {
        if (string.IsNullOrEmpty(name) || name.Contains('.'))
            throw new NablaException($"{GetType().Name}: attribute name '{name}' must be non-empty and contain no '.'");
        // Plain loops, not LINQ: Any over these tuple lists is a generic instantiation ReadyToRun does not hold, so it
        // would be compiled by the JIT when the first model is built (docs/architecture.md, "Start-up").
        bool taken = false;
        foreach (var p in parameters) taken |= p.name == name;
        foreach (var b in buffers) taken |= b.name == name;
        foreach (var c in children) taken |= c.name == name;
        if (taken) throw new NablaException($"{GetType().Name}: attribute '{name}' is already registered");
    }

    /// <summary>Replaces the tensor held under a registered parameter name (used when loading without copying).</summary>
    protected void SetParameter(string name, Tensor value)
    {
        int i = parameters.FindIndex(p => p.name == name);
        if (i < 0) throw new NablaException($"{GetType().Name}: no parameter named '{name}'");
        value.RequiresGrad = true;
        value.storage.Keep();
        parameters[i] = (name, value);
    }

    public IEnumerable<(string name, Tensor parameter)> NamedParameters(bool recurse = true)
    {
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var (prefix, m) in NamedModules())
        {
            if (!recurse && m != this) continue;
            foreach (var (n, p) in m.parameters)
                if (p is not null && seen.Add(p)) yield return (Join(prefix, n), p);
        }
    }

    public IEnumerable<Tensor> Parameters(bool recurse = true) => NamedParameters(recurse).Select(p => p.parameter);

    public IEnumerable<(string name, Tensor buffer)> NamedBuffers()
    {
        foreach (var (prefix, m) in NamedModules())
            foreach (var (n, b, _) in m.buffers)
                if (b is not null) yield return (Join(prefix, n), b);
    }

    /// <summary>This module and every descendant, depth-first in registration order, with dotted names ("" for this one).</summary>
    public IEnumerable<(string name, Module module)> NamedModules()
    {
        var seen = new HashSet<Module>(ReferenceEqualityComparer.Instance);
        var stack = new List<(string name, Module module)> { ("", this) };   // a list used as a stack: same type as children
        while (stack.Count > 0)
        {
            var (name, m) = stack[^1];
            stack.RemoveAt(stack.Count - 1);
            if (!seen.Add(m)) continue;
            yield return (name, m);
            for (int i = m.children.Count - 1; i >= 0; i--) stack.Add((Join(name, m.children[i].name), m.children[i].module));
        }
    }

    public IEnumerable<(string name, Module module)> NamedChildren() => children;

    static string Join(string prefix, string name) => prefix.Length == 0 ? name : prefix + "." + name;

    /// <summary>Parameters and persistent buffers by their dotted names, in registration order (detached views).</summary>
    public Dictionary<string, Tensor> StateDict()
    {
        var d = new Dictionary<string, Tensor>();
        foreach (var (prefix, m) in NamedModules())
        {
            foreach (var (n, p) in m.parameters) if (p is not null) d[Join(prefix, n)] = p.Detach();
            foreach (var (n, b, persistent) in m.buffers) if (b is not null && persistent) d[Join(prefix, n)] = b.Detach();
        }
        return d;
    }

    /// <summary>
    /// Copies values into this module's parameters and buffers. Strict (the default) throws on any missing or
    /// unexpected key; non-strict returns them. A shape that differs from the model's, or a dtype that does (a
    /// floating-point value may load into a floating-point parameter of another width, converted as torch's copy_
    /// does; every other dtype must match), always throws. Every error is a <see cref="ModelFormatException"/> naming
    /// <paramref name="source"/> (the file the state came from, when given) and the tensor; nothing is copied unless
    /// every entry fits.
    /// </summary>
    public (List<string> missing, List<string> unexpected) LoadStateDict(IReadOnlyDictionary<string, Tensor> state, bool strict = true, string? source = null)
    {
        ArgumentNullException.ThrowIfNull(state);
        string where = source is null ? "load_state_dict" : $"load_state_dict: '{source}'";
        var own = new Dictionary<string, Tensor>();
        foreach (var (prefix, m) in NamedModules())
        {
            foreach (var (n, p) in m.parameters) if (p is not null) own[Join(prefix, n)] = p;
            foreach (var (n, b, persistent) in m.buffers) if (b is not null && persistent) own[Join(prefix, n)] = b;
        }
        var missing = own.Keys.Where(k => !state.ContainsKey(k)).ToList();
        var unexpected = state.Keys.Where(k => !own.ContainsKey(k)).ToList();
        if (strict && (missing.Count > 0 || unexpected.Count > 0))
            throw new ModelFormatException($"{where}: error(s) in loading state dict for {GetType().Name}: " +
                (missing.Count > 0 ? $"missing keys: {string.Join(", ", missing.Take(20))}{(missing.Count > 20 ? ", ..." : "")}. " : "") +
                (unexpected.Count > 0 ? $"unexpected keys: {string.Join(", ", unexpected.Take(20))}{(unexpected.Count > 20 ? ", ..." : "")}." : ""));
        foreach (var (k, target) in own)
        {
            if (!state.TryGetValue(k, out var src)) continue;
            if (src is null) throw new ModelFormatException($"{where}: tensor '{k}' is null");
            if (!ShapeUtil.Equal(src.shape, target.shape))
                throw new ModelFormatException($"{where}: size mismatch for tensor '{k}': copying a param with shape {ShapeUtil.Format(src.shape)}, the shape in the current model is {ShapeUtil.Format(target.shape)}");
            if (src.DType != target.DType && !(src.DType.IsFloatingPoint() && target.DType.IsFloatingPoint()))
                throw new ModelFormatException($"{where}: dtype mismatch for tensor '{k}': the state holds {src.DType.TorchName()}, the current model has {target.DType.TorchName()}");
        }
        foreach (var (k, target) in own)
        {
            if (!state.TryGetValue(k, out var src)) continue;
            using (GradMode.NoGrad()) target.Copy_(src);
        }
        return (missing, unexpected);
    }

    public Module Train(bool mode = true)
    {
        foreach (var (_, m) in NamedModules()) m.Training = mode;
        return this;
    }

    public Module Eval() => Train(false);

    /// <summary>Calls <paramref name="fn"/> on every submodule (children first) and then on this module.</summary>
    public Module Apply(Action<Module> fn)
    {
        foreach (var (_, c) in children) c.Apply(fn);
        fn(this);
        return this;
    }

    /// <summary>Sets every parameter's gradient to null (PyTorch's default set_to_none=True).</summary>
    public void ZeroGrad()
    {
        foreach (var p in Parameters()) p.Grad = null;
    }

    public long NumParameters(bool trainableOnly = false) => Parameters().Where(p => !trainableOnly || p.RequiresGrad).Sum(p => (long)p.NumElements);

    /// <summary>A one-line-per-module summary in PyTorch's repr style.</summary>
    public override string ToString() => Repr(0);

    protected virtual string ExtraRepr() => "";

    string Repr(int indent)
    {
        var head = GetType().Name + "(" + ExtraRepr();
        if (children.Count == 0) return head + ")";
        var sb = new System.Text.StringBuilder(head);
        sb.Append('\n');
        foreach (var (n, c) in children)
            sb.Append(' ', indent + 2).Append('(').Append(n).Append("): ").Append(c.Repr(indent + 2)).Append('\n');
        sb.Append(' ', indent).Append(')');
        return sb.ToString();
    }
}

/// <summary>Applies its modules in order.</summary>
public sealed class Sequential : Module
{
    readonly List<Module> layers = new();

    public Sequential(params Module[] modules)
    {
        foreach (var m in modules) Append(m);
    }

    public Sequential Append(Module m)
    {
        RegisterModule(layers.Count.ToString(System.Globalization.CultureInfo.InvariantCulture), m);
        layers.Add(m);
        return this;
    }

    public int Count => layers.Count;
    public Module this[int i] => layers[i];

    public override Tensor Forward(Tensor input)
    {
        var x = input;
        foreach (var m in layers) x = m.Forward(x);
        return x;
    }
}

/// <summary>Holds submodules in a list; they are registered as "0", "1", ...</summary>
public sealed class ModuleList : Module, IReadOnlyList<Module>
{
    readonly List<Module> items = new();

    public ModuleList(params Module[] modules)
    {
        foreach (var m in modules) Add(m);
    }

    public void Add(Module m)
    {
        RegisterModule(items.Count.ToString(System.Globalization.CultureInfo.InvariantCulture), m);
        items.Add(m);
    }

    public Module this[int index] => items[index];
    public int Count => items.Count;
    public IEnumerator<Module> GetEnumerator() => items.GetEnumerator();
    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
}

/// <summary>Holds submodules by name, in insertion order.</summary>
public sealed class ModuleDict : Module
{
    readonly Dictionary<string, Module> items = new();

    public void Add(string name, Module m)
    {
        RegisterModule(name, m);
        items[name] = m;
    }

    public Module this[string name] => items.TryGetValue(name, out var m) ? m : throw new KeyNotFoundException($"ModuleDict: no module named '{name}'");
    public IEnumerable<string> Keys => items.Keys;
    public int Count => items.Count;
}
