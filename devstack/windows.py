"""The measure every check of the limit applies to what the gateway received: the most
sends of one account within any rolling window."""


def max_in_window(times, window):
    """The most of `times` (ms) within any span shorter than `window` ms."""
    times = sorted(times)
    best, j = 0, 0
    for i in range(len(times)):
        while times[i] - times[j] >= window:
            j += 1
        best = max(best, i - j + 1)
    return best
