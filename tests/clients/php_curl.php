<?php
// PHP's curl extension through claimgate: POST the request body on stdin to URL, print the answer.
//   php php_curl.php URL                   # HTTPS_PROXY from the environment, the CA from php.ini
//                                          # (php -d curl.cainfo=/path/ca.pem ... here)
//   php php_curl.php URL PROXY CA_FILE     # both set as curl options in code
// The request is sent the way the official onOffice SDK sends it (HttpFetch::send): the
// options given to $sdk->setApiCurlOptions([...]) are applied last, exactly as here.

[$url, $proxy, $ca] = array_pad(array_slice($argv, 1), 3, null);

$curlOptions = [];
if ($proxy !== null && $ca !== null) {
    $curlOptions = [
        CURLOPT_PROXY => $proxy,  // claimgate's forward listener
        CURLOPT_CAINFO => $ca,    // what `claimgate ca` prints
    ];
}

$curl = curl_init($url);
curl_setopt($curl, CURLOPT_POST, true);
curl_setopt($curl, CURLOPT_ACCEPT_ENCODING, '');
curl_setopt($curl, CURLOPT_POSTFIELDS, file_get_contents('php://stdin'));
curl_setopt($curl, CURLOPT_RETURNTRANSFER, true);
curl_setopt($curl, CURLOPT_TIMEOUT, 30);
foreach ($curlOptions as $option => $value) {
    curl_setopt($curl, $option, $value);
}
$result = curl_exec($curl);
if ($result === false || curl_getinfo($curl, CURLINFO_RESPONSE_CODE) !== 200) {
    fwrite(STDERR, 'curl: ' . curl_error($curl) . "\n");
    exit(1);
}
echo $result, "\n";
