// Legacy HttpURLConnection code that cannot change: POST the request body on stdin to URL,
// print the answer. claimgate is set from outside, with JVM flags:
//   java -Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=8080 \
//        -Djavax.net.ssl.trustStore=claimgate.p12 -Djavax.net.ssl.trustStorePassword=changeit \
//        LegacyUrlConnection URL
import java.io.InputStream;
import java.io.OutputStream;
import java.net.HttpURLConnection;
import java.net.URL;
import java.nio.charset.StandardCharsets;

public class LegacyUrlConnection {
    public static void main(String[] args) throws Exception {
        byte[] body = System.in.readAllBytes();
        HttpURLConnection connection = (HttpURLConnection) new URL(args[0]).openConnection();
        connection.setConnectTimeout(10_000);
        connection.setReadTimeout(30_000);
        connection.setRequestMethod("POST");
        connection.setDoOutput(true);
        try (OutputStream out = connection.getOutputStream()) {
            out.write(body);
        }
        if (connection.getResponseCode() != 200) {
            throw new IllegalStateException("HTTP " + connection.getResponseCode());
        }
        try (InputStream in = connection.getInputStream()) {
            System.out.println(new String(in.readAllBytes(), StandardCharsets.UTF_8));
        }
    }
}
