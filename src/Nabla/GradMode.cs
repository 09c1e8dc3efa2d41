namespace Nabla;

/// <summary>
/// Whether operations record the autograd graph on this thread. <c>using (GradMode.NoGrad()) { ... }</c>
/// is PyTorch's <c>torch.no_grad()</c>.
/// </summary>
public static class GradMode
{
    [ThreadStatic] static bool disabled;

    public static bool IsEnabled => !disabled;

    public static Scope NoGrad() => new(false);

    public static Scope EnableGrad() => new(true);

    public readonly struct Scope : IDisposable
    {
        readonly bool previousDisabled;

        internal Scope(bool enabled)
        {
            previousDisabled = disabled;
            disabled = !enabled;
        }

        public void Dispose() => disabled = previousDisabled;
    }
}
