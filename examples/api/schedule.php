<?php
// Schedule a job through the nexus-schedd HTTP API from plain PHP (the curl
// extension, no framework, no composer), read it back and list its runs.
//
//   NEXUS_API_TOKEN=... [NEXUS_API_URL=http://127.0.0.1:8470/api/v1] php examples/api/schedule.php
//
// Needs an admin token ([[api.tokens]] with scope = "admin") and a daemon with
// the built-in "log" handler. Errors are application/problem+json (RFC 9457).

declare(strict_types=1);

if (!extension_loaded('curl')) {
    fwrite(STDERR, "this example needs PHP's curl extension (Debian: apt-get install php-curl)\n");
    exit(2);
}
$token = getenv('NEXUS_API_TOKEN');
if ($token === false || $token === '') {
    fwrite(STDERR, "set NEXUS_API_TOKEN to an admin token of nexus-schedweb\n");
    exit(2);
}
$base = rtrim(getenv('NEXUS_API_URL') ?: 'http://127.0.0.1:8470/api/v1', '/');

/**
 * One request; returns [status, decoded JSON body, headers]. Throws on a problem reply.
 */
function api(string $method, string $path, ?array $body = null, array $headers = []): array
{
    global $base, $token;
    $curl = curl_init($base . $path);
    $responseHeaders = [];
    $headers[] = 'Authorization: Bearer ' . $token;
    $headers[] = 'Accept: application/json';
    $options = [
        CURLOPT_CUSTOMREQUEST => $method,
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_TIMEOUT => 30,
        CURLOPT_HEADERFUNCTION => function ($curl, string $line) use (&$responseHeaders): int {
            $parts = explode(':', $line, 2);
            if (count($parts) === 2) {
                $responseHeaders[strtolower(trim($parts[0]))] = trim($parts[1]);
            }
            return strlen($line);
        },
    ];
    if ($body !== null) {
        $options[CURLOPT_POSTFIELDS] = json_encode($body, JSON_THROW_ON_ERROR);
        $headers[] = 'Content-Type: application/json';
    }
    $options[CURLOPT_HTTPHEADER] = $headers;
    curl_setopt_array($curl, $options);
    $text = curl_exec($curl);
    if ($text === false) {
        throw new RuntimeException('cannot reach ' . $base . ': ' . curl_error($curl));
    }
    $status = curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
    curl_close($curl);
    $data = json_decode($text, true, 512, JSON_THROW_ON_ERROR);
    if ($status >= 400) {
        // e.g. type "urn:nexus-schedd:error:io.nexus.Scheduler.InvalidSpec", field, reason
        throw new RuntimeException("HTTP $status {$data['title']}: {$data['detail']} ({$data['type']})");
    }
    return [$status, $data, $responseHeaders];
}

try {
    // 1. Schedule: one export for invoice 42, due now, with an idempotency key so
    //    that a retried request (timeout, crash) cannot add it twice.
    $key = 'php-example-' . bin2hex(random_bytes(8));
    [$status, $job, $headers] = api('POST', '/jobs', [
        'job_type' => 'log',
        'target_id' => 'invoice-42',
        'payload' => ['message' => 'hello from PHP', 'invoice' => 42],
        'max_retries' => 1,
    ], ['Idempotency-Key: ' . $key]);
    printf("scheduled job %s (HTTP %d, Location: %s)\n", $job['id'], $status, $headers['location'] ?? '-');

    // 2. Read it back: the same JSON object as Varlink and `nexus-schedctl --json`.
    [, $job] = api('GET', '/jobs/' . rawurlencode($job['id']));
    printf("read back: type=%s target=%s status=%s run_at=%s\n",
        $job['job_type'], $job['target_id'], $job['status'], $job['run_at'] ?? 'null');

    // 3. List its runs (it was due at once; give the daemon a moment to run it).
    $runs = [];
    for ($try = 0; $try < 50; $try++) {
        [, $page] = api('GET', '/runs?' . http_build_query(['job_id' => $job['id'], 'limit' => 10]));
        $runs = $page['runs'];
        if ($runs && $runs[0]['outcome'] !== null) {
            break;
        }
        usleep(200000);
    }
    printf("%d run(s):\n", count($runs));
    foreach ($runs as $run) {
        printf("  attempt %d  scheduled %s  outcome %s  %.1f ms\n",
            $run['attempt'], $run['scheduled_for'], $run['outcome'] ?? 'running',
            $run['duration_ms'] ?? 0.0);
    }
} catch (Throwable $error) {
    fwrite(STDERR, 'error: ' . $error->getMessage() . "\n");
    exit(1);
}
